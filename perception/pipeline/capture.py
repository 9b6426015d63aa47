"""Capture threads (one per camera, bounded queue) and timestamp synchronisation.

Each :class:`CaptureThread` reads its :class:`~perception.pipeline.sources.Source` as fast as
the source delivers and puts frames in a small queue. A *live* source never blocks: when
the queue is full the oldest frame is dropped (and counted), so a slow consumer always sees
recent frames. A *file* source blocks instead (offline runs process every frame).

A live source that stops delivering (disconnect, unplugged camera, network) is closed and
re-opened with exponential backoff while the other cameras go on; its state is
``reconnecting`` meanwhile, which the BEV shows as a stale sector.

:class:`Synchronizer` assembles one multi-camera frame at a time: the first running camera is
the reference; every other camera contributes its queued frame nearest to the reference
timestamp within ``tolerance`` seconds. Older frames are dropped and counted; a camera with
no frame in the window is *missing* for this frame (stale) and does not hold the others up
for more than ``wait`` seconds (live) — file sources are waited for, so offline runs are
deterministic.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field

import numpy as np

from perception.pipeline.sources import Source, SourceError

log = logging.getLogger(__name__)

__all__ = ["CapturedFrame", "FrameQueue", "CaptureThread", "SyncedFrames", "Synchronizer", "Backoff"]


@dataclass
class CapturedFrame:
    camera: int
    image: np.ndarray
    timestamp: float
    seq: int


class FrameQueue:
    """A bounded deque with peek, blocking put (files) or drop-oldest put (live)."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = max(1, int(maxsize))
        self._q: deque[CapturedFrame] = deque()
        self.cond = threading.Condition()

    def __len__(self) -> int:
        return len(self._q)

    def put(self, item: CapturedFrame, *, drop_oldest: bool, stop: threading.Event) -> int:
        """Insert; returns how many frames were dropped to make room."""
        with self.cond:
            dropped = 0
            if drop_oldest:
                while len(self._q) >= self.maxsize:
                    self._q.popleft()
                    dropped += 1
            else:
                while len(self._q) >= self.maxsize and not stop.is_set():
                    self.cond.wait(0.05)
                if stop.is_set():
                    return 0
            self._q.append(item)
            self.cond.notify_all()
            return dropped

    def peek(self) -> CapturedFrame | None:
        with self.cond:
            return self._q[0] if self._q else None

    def pop(self) -> CapturedFrame | None:
        with self.cond:
            item = self._q.popleft() if self._q else None
            self.cond.notify_all()
            return item

    def wait(self, timeout: float) -> bool:
        """Wait until an item is queued (or timeout); True when one is."""
        with self.cond:
            if not self._q:
                self.cond.wait(timeout)
            return bool(self._q)


@dataclass
class Backoff:
    """Exponential reconnect delays: ``initial * factor**k`` capped at ``maximum``."""

    initial: float = 0.2
    factor: float = 2.0
    maximum: float = 5.0
    attempts: int = 0   # 0: retry forever

    def delays(self):
        d, k = self.initial, 0
        while self.attempts == 0 or k < self.attempts:
            yield d
            d = min(self.maximum, d * self.factor)
            k += 1


class CaptureThread(threading.Thread):
    """Reads one source into a :class:`FrameQueue` until stopped or the source ends."""

    def __init__(self, index: int, source: Source, *, queue_size: int = 4, backoff: Backoff | None = None) -> None:
        super().__init__(name=f"capture-{source.name}", daemon=True)
        self.index, self.source = index, source
        self.queue = FrameQueue(queue_size)
        self.backoff = backoff or Backoff()
        self.stop_event = threading.Event()
        self.state = "starting"          # starting, running, reconnecting, finished, failed
        self.frames = 0
        self.dropped = 0
        self.reconnects = 0
        self.errors: Counter[str] = Counter()
        self.error_message = ""

    @property
    def live(self) -> bool:
        return self.source.live

    @property
    def done(self) -> bool:
        """No more frames will come (finished or failed) and the queue is empty."""
        return self.state in ("finished", "failed") and len(self.queue) == 0

    def stop(self) -> None:
        self.stop_event.set()

    def all_errors(self) -> Counter[str]:
        return self.errors + self.source.errors

    def _reconnect(self) -> bool:
        self.state = "reconnecting"
        self.source.close()
        for delay in self.backoff.delays():
            if self.stop_event.wait(delay):
                return False
            try:
                self.source.open()
            except SourceError as exc:
                log.debug("%s: reconnect failed (%s); next try in up to %.1fs", self.source.name, exc, delay)
                continue
            self.reconnects += 1
            log.warning("%s: reconnected", self.source.name)
            self.state = "running"
            return True
        self.state = "failed"
        self.error_message = f"{self.source.name}: gave up reconnecting"
        return False

    def run(self) -> None:
        try:
            self.source.open()
        except SourceError as exc:
            self.errors["open"] += 1
            self.error_message = str(exc)
            log.error("%s", exc)
            if not (self.source.live and self._reconnect()):
                self.state = "failed"
                return
        except Exception as exc:  # noqa: BLE001 - a thread must not die silently
            self.errors["open"] += 1
            self.error_message = f"{self.source.name}: {exc}"
            log.error("%s: cannot open: %s", self.source.name, exc)
            self.state = "failed"
            return
        self.state = "running"
        seq = 0
        try:
            while not self.stop_event.is_set():
                try:
                    ok, image, ts = self.source.read()
                except Exception as exc:  # noqa: BLE001 - a broken source is an error, not a crash
                    ok, image, ts = False, None, 0.0
                    self.source.last_error = str(exc)
                if ok and image is not None:
                    self.frames += 1
                    self.dropped += self.queue.put(CapturedFrame(self.index, image, ts, seq),
                                                   drop_oldest=self.source.live, stop=self.stop_event)
                    seq += 1
                    continue
                if self.source.finished or not self.source.live:
                    self.state = "finished"
                    return
                self.errors["disconnect"] += 1
                log.warning("%s: no frame (%s); reconnecting with backoff", self.source.name,
                            self.source.last_error or "disconnected")
                if not self._reconnect():
                    if self.state != "failed":
                        self.state = "finished"
                    return
        finally:
            if self.state != "failed":
                self.state = "finished"
            self.source.close()
            with self.queue.cond:
                self.queue.cond.notify_all()


@dataclass
class SyncedFrames:
    """One synchronised set: per camera an image or None (missing/stale this frame)."""

    index: int
    timestamp: float
    images: list[np.ndarray | None]
    timestamps: list[float | None]
    states: list[str] = field(default_factory=list)


class Synchronizer:
    """Nearest-timestamp synchronisation of several capture threads (see module docstring)."""

    def __init__(self, captures: list[CaptureThread], *, tolerance: float = 0.05, wait: float = 0.1,
                 file_wait: float = 30.0, first_frame_timeout: float | None = None) -> None:
        self.captures = captures
        self.tolerance, self.wait, self.file_wait = tolerance, wait, file_wait
        self.first_frame_timeout = first_frame_timeout  # s; None: wait for a first frame forever
        self.timed_out = False                # no camera delivered a frame within first_frame_timeout
        self.dropped = 0                      # frames discarded because they missed the window
        self.missing: Counter[str] = Counter()  # per camera: sets it had no frame for
        self._index = 0
        self._t_start = time.monotonic()
        self.stop_event = threading.Event()

    def _no_frame_in_time(self) -> bool:
        """True (once and for all) when no camera has delivered any frame within the timeout."""
        if self.first_frame_timeout is None or self._index > 0 or any(c.frames for c in self.captures):
            return False
        if time.monotonic() - self._t_start > self.first_frame_timeout:
            self.timed_out = True
        return self.timed_out

    def start(self) -> None:
        self._t_start = time.monotonic()
        for c in self.captures:
            if not c.is_alive() and c.state == "starting":
                c.start()

    def stop(self) -> None:
        self.stop_event.set()
        for c in self.captures:
            c.stop()

    def join(self, timeout: float = 5.0) -> None:
        for c in self.captures:
            if c.is_alive():
                c.join(timeout)

    @property
    def queue_dropped(self) -> int:
        return sum(c.dropped for c in self.captures)

    def _reference(self) -> CaptureThread | None:
        """The first camera that has (or will have) frames: running, or with frames queued."""
        for c in self.captures:
            if len(c.queue):
                return c
            if c.state in ("starting", "running") and not (c.live and c.state == "reconnecting"):
                return c
        for c in self.captures:
            if c.state == "reconnecting":
                return c
        return None

    def next(self) -> SyncedFrames | None:
        """Block until the next synchronised set; None at the end (all sources done) or on stop."""
        ref_frame = None
        while ref_frame is None:
            if self.stop_event.is_set():
                return None
            if all(c.done for c in self.captures) or self._no_frame_in_time():
                return None
            # the earliest queued head among cameras that have frames ready, else wait on the first one
            ref = self._reference()
            if ref is None:
                return None
            # prefer the first camera; if it has no frame but is live and others do, do not wait long
            if ref.queue.wait(0.05 if ref.live or ref.state == "reconnecting" else 0.2):
                head = ref.queue.peek()
                # a live reference must not leave others waiting: if another camera's head is much older,
                # that camera's frames will simply be dropped by the window below
                ref_frame = ref.queue.pop() if head is not None else None
            elif ref.state in ("reconnecting", "failed", "finished"):
                # reference died: try the next camera with frames on the next loop
                others = [c for c in self.captures if c is not ref and len(c.queue)]
                if others:
                    ref_frame = others[0].queue.pop()
        t = ref_frame.timestamp
        n = len(self.captures)
        images: list[np.ndarray | None] = [None] * n
        stamps: list[float | None] = [None] * n
        images[ref_frame.camera], stamps[ref_frame.camera] = ref_frame.image, t
        deadline = time.monotonic() + self.wait
        for c in self.captures:
            if c.index == ref_frame.camera:
                continue
            file_deadline = time.monotonic() + self.file_wait
            while True:
                head = c.queue.peek()
                if head is not None:
                    if head.timestamp < t - self.tolerance:
                        c.queue.pop()
                        self.dropped += 1
                        continue
                    if head.timestamp <= t + self.tolerance:
                        c.queue.pop()
                        images[c.index], stamps[c.index] = head.image, head.timestamp
                    break
                if c.state in ("finished", "failed") or self.stop_event.is_set():
                    break
                if c.live or c.state == "reconnecting":
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    c.queue.wait(min(remaining, 0.02))
                else:
                    if time.monotonic() > file_deadline:
                        break
                    c.queue.wait(0.05)
            if images[c.index] is None:
                self.missing[c.source.name] += 1
        out = SyncedFrames(self._index, t, images, stamps, [c.state for c in self.captures])
        self._index += 1
        return out
