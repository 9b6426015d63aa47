"""The pipeline engine: small replaceable stages, pipelined over threads, timed per stage.

A :class:`Frame` (one synchronised multi-camera instant) flows through the stages of
DESIGN.md section 1::

    sync -> preprocess -> model -> decode -> lift -> bev -> track -> render -> sinks

Every stage is an object with ``__call__(frame) -> frame`` (and a ``name``), so it can be
timed, moved to another thread or replaced (the model stage wraps a
:class:`~perception.pipeline.backends.Backend`). :class:`Engine` runs *groups* of stages in
their own threads connected by bounded queues, so capture/decoding, inference and rendering
overlap: with the default grouping ``[preprocess, model, decode] | [lift, bev, track] |
[render, sinks]`` the network of frame *k* runs while frame *k-1* is fused and frame *k-2*
rendered. PyTorch, OpenCV and numpy release the GIL in their kernels, so the threads really
run in parallel.

Stage latency is measured around each ``__call__`` (milliseconds, median in the summary);
``total`` is the latency of a frame from synchronisation to the last sink.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from perception.geometry import Camera, Rig
from perception.geometry.resize import FrameResize, plan_resize
from perception.nn.model import DET_STRIDES, MAX_STRIDE
from perception.nn.postprocess import Detections, decode_detections, make_anchors, select_detections
from perception.pipeline.backends import Backend
from perception.pipeline.bev import BEVConfig, BEVState, GroundMosaic, OccupancyGrid, fuse_objects
from perception.pipeline.capture import Synchronizer
from perception.pipeline.lifting import DepthPointCloud, DepthSmoother, GroundGate, lift_detections
from perception.pipeline.tracking import Tracker

log = logging.getLogger(__name__)

__all__ = ["Frame", "Stage", "Preprocess", "ModelStage", "Decode", "Lift", "BEVFusion", "Track", "SinkStage",
           "StageTimer", "StageGroup", "Engine", "frames_from_synchronizer"]


@dataclass
class Frame:
    """One synchronised multi-camera frame and everything the stages add to it."""

    index: int
    timestamp: float
    names: list[str]
    images: list[np.ndarray | None]                    # native RGB uint8, None: missing (stale)
    stale: list[bool] = field(default_factory=list)
    cameras: list[Camera | None] = field(default_factory=list)     # native-resolution cameras
    net_cameras: list[Camera | None] = field(default_factory=list)  # network-resolution cameras
    resizes: list[FrameResize | None] = field(default_factory=list)  # native -> network pixels, per camera
    batch_index: list[int] = field(default_factory=list)   # camera -> row of the batch, -1 if absent
    batch: torch.Tensor | None = None
    intrinsics: torch.Tensor | None = None
    raw: dict[str, torch.Tensor] | None = None
    valid: list[bool] = field(default_factory=list)        # camera result usable (present, finite)
    detections: list[Detections | None] = field(default_factory=list)
    depth: list[np.ndarray | None] = field(default_factory=list)   # network resolution, metres
    objects: list = field(default_factory=list)            # LiftedObject, all cameras
    points: np.ndarray | None = None                       # ego points from depth
    fused: list = field(default_factory=list)              # FusedObject
    tracks: list = field(default_factory=list)             # confirmed Track
    bev: BEVState | None = None
    canvas: np.ndarray | None = None                       # rendered BGR frame
    bev_image: np.ndarray | None = None                    # rendered BGR BEV panel (full resolution)
    timings: dict[str, float] = field(default_factory=dict)
    errors: Counter = field(default_factory=Counter)
    t_start: float = 0.0
    stats: dict[str, Any] = field(default_factory=dict)    # live stats for overlays (fps, latency)


class Stage(Protocol):
    name: str

    def __call__(self, frame: Frame) -> Frame: ...


# ----------------------------------------------------------------------------- stages
class Preprocess:
    """Resize every camera image to the network size with the one resize of the package
    (:func:`perception.geometry.resize.plan_resize`: one scale on both axes to cover the
    network size, centred window, K updated), then float [0, 1] NCHW (channels_last). On a GPU
    device the resize runs on the GPU.

    An image whose size differs from its calibration gets K rescaled, with one warning per size."""

    name = "preprocess"

    def __init__(self, rig: Rig, size: tuple[int, int], device: str = "cpu") -> None:
        self.rig, self.size, self.device = rig, size, torch.device(device)
        self._cams: dict[tuple[int, int, int], tuple[Camera, Camera, FrameResize]] = {}
        self._lock = threading.Lock()  # the stage may run in several threads (StageGroup.workers)

    def cameras_for(self, i: int, width: int, height: int) -> tuple[Camera, Camera, FrameResize]:
        """(native camera, network camera, resize plan) of camera ``i`` for a ``width x height`` image."""
        key = (i, width, height)
        with self._lock:
            if key not in self._cams:
                self._cams[key] = self._plan(i, width, height)
            return self._cams[key]

    def _plan(self, i: int, width: int, height: int) -> tuple[Camera, Camera, FrameResize]:
        cam = self.rig.cameras[i]
        if (width, height) != cam.size:
            log.warning("camera '%s': image is %dx%d but the calibration is for %dx%d; rescaling K%s",
                        cam.name, width, height, cam.width, cam.height,
                        " (the aspect ratio differs too: check the calibration)"
                        if abs(width / height - cam.width / cam.height) > 0.01 else "")
            cam = cam.scaled(width, height)
        plan = plan_resize(width, height, self.size)
        if plan.kept_fraction < 0.9:
            log.warning("camera '%s': the network size %dx%d has another aspect ratio than the %dx%d image, "
                        "so only %.0f%% of the image is analysed (leave --size out to fit the camera)",
                        cam.name, self.size[0], self.size[1], width, height, 100 * plan.kept_fraction)
        return cam, plan.camera(cam), plan

    def __call__(self, frame: Frame) -> Frame:
        H, W = self.size
        n = len(frame.images)
        frame.cameras, frame.net_cameras, frame.batch_index = [None] * n, [None] * n, [-1] * n
        frame.resizes = [None] * n
        rows, Ks = [], []
        for i, img in enumerate(frame.images):
            if img is None:
                continue
            cam, net, plan = self.cameras_for(i, img.shape[1], img.shape[0])
            frame.cameras[i], frame.net_cameras[i], frame.resizes[i] = cam, net, plan
            frame.batch_index[i] = len(rows)
            if self.device.type == "cuda":
                t = torch.from_numpy(img).to(self.device, non_blocking=True).permute(2, 0, 1)[None].float() / 255
                if t.shape[-2:] != (plan.scaled_h, plan.scaled_w):
                    t = F.interpolate(t, size=(plan.scaled_h, plan.scaled_w), mode="bilinear", align_corners=False,
                                      antialias=True)
                rows.append(t[..., plan.y0:plan.y0 + H, plan.x0:plan.x0 + W])
            else:
                rows.append(plan.apply(img))
            Ks.append(net.K)
        if not rows:
            frame.batch = None
            return frame
        if self.device.type == "cuda":
            frame.batch = torch.cat(rows).contiguous(memory_format=torch.channels_last)
        else:
            # NHWC uint8 -> float in numpy (contiguous; torch's strided uint8->float copy of the permuted
            # view is ~7x slower), then an NCHW view that is channels_last in memory
            nhwc = np.multiply(np.stack(rows), np.float32(1.0 / 255.0), dtype=np.float32)
            frame.batch = torch.from_numpy(nhwc).permute(0, 3, 1, 2)
        frame.intrinsics = torch.as_tensor(np.stack(Ks), dtype=torch.float32, device=self.device)
        return frame


class ModelStage:
    """One batched forward of all cameras through a :class:`Backend`."""

    name = "model"

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    def __call__(self, frame: Frame) -> Frame:
        if frame.batch is not None:
            frame.raw = self.backend(frame.batch, frame.intrinsics)
        return frame


class Decode:
    """Raw outputs -> per-camera :class:`Detections` (network pixels) and smoothed depth maps.

    A camera whose outputs contain NaN or Inf is marked invalid for this frame
    (``errors['nonfinite_output']``) instead of poisoning the BEV and tracker."""

    name = "decode"

    def __init__(self, classes: tuple[str, ...], f_ref: float, *, score_thresh: float = 0.5,
                 iou_thresh: float = 0.6, max_det: int = 50, depth_alpha: float = 0.6,
                 strides: tuple[int, ...] = DET_STRIDES) -> None:
        self.classes, self.f_ref, self.strides = tuple(classes), f_ref, tuple(strides)
        self.score_thresh, self.iou_thresh, self.max_det = score_thresh, iou_thresh, max_det
        self.smoother = DepthSmoother(depth_alpha)
        self._anchors: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def anchors(self, H: int, W: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        key = (H, W, str(device))
        if key not in self._anchors:
            Hp, Wp = H + (-H) % MAX_STRIDE, W + (-W) % MAX_STRIDE
            self._anchors[key] = make_anchors(Hp, Wp, self.strides, device)
        return self._anchors[key]

    def __call__(self, frame: Frame) -> Frame:
        n = len(frame.images)
        frame.valid, frame.detections, frame.depth = [False] * n, [None] * n, [None] * n
        if frame.raw is None:
            return frame
        det, depth = frame.raw["det"], frame.raw["depth"]
        finite = (torch.isfinite(det).flatten(1).all(1) & torch.isfinite(depth).flatten(1).all(1)).cpu()
        ok_rows = [r for r in range(det.shape[0]) if bool(finite[r])]
        H, W = frame.batch.shape[-2:]
        dets: dict[int, Detections] = {}
        if ok_rows:
            idx = torch.tensor(ok_rows, device=det.device)
            anchors, strides = self.anchors(H, W, det.device)
            decoded = decode_detections(det[idx], anchors, strides, len(self.classes), frame.intrinsics[idx],
                                        self.f_ref)
            for r, d in zip(ok_rows, select_detections(decoded, (H, W), self.score_thresh, self.iou_thresh,
                                                       self.max_det, classes=self.classes)):
                dets[r] = d
        depth_np = depth[:, 0].float().cpu().numpy()
        for i in range(n):
            r = frame.batch_index[i] if frame.batch_index else -1
            name = frame.names[i]
            if r < 0:
                self.smoother.reset(name)
                continue
            if r not in dets:
                frame.errors["nonfinite_output"] += 1
                log.warning("frame %d camera '%s': model output has NaN/Inf; frame marked invalid",
                            frame.index, name)
                self.smoother.reset(name)
                continue
            frame.valid[i] = True
            frame.detections[i] = dets[r]
            frame.depth[i] = self.smoother(name, depth_np[r])
        frame.raw = None  # free the tensors early
        frame.batch = None
        return frame


class Lift:
    """Detections -> ego-frame objects (head/dense/ground-contact cross-check), depth -> ego points.

    With a :class:`GroundGate` (the default), objects floating above the ground are dropped and
    counted in :attr:`floating_dropped`; ``ground_gate=None`` keeps everything."""

    name = "lift"

    def __init__(self, point_stride: int = 4, max_depth: float = 50.0,
                 ground_gate: GroundGate | None = GroundGate()) -> None:
        self.cloud = DepthPointCloud(point_stride, max_depth)
        self.ground_gate = ground_gate
        self.floating_dropped = 0

    def __call__(self, frame: Frame) -> Frame:
        objects, points = [], []
        for i, ok in enumerate(frame.valid):
            if not ok:
                continue
            cam = frame.net_cameras[i]
            objects += lift_detections(frame.detections[i], frame.depth[i], cam)
            points.append(self.cloud(frame.depth[i], cam))
        if self.ground_gate is not None:
            objects, dropped = self.ground_gate(objects)
            if dropped:
                self.floating_dropped += len(dropped)
                log.debug("frame %d: dropped %d floating object(s): %s", frame.index, len(dropped),
                          ", ".join(f"{o.label} {o.bottom_height:.1f} m up at {o.ground_range:.0f} m" for o in dropped))
        frame.objects = objects
        frame.points = np.concatenate(points) if points else np.zeros((0, 3), np.float32)
        return frame


class BEVFusion:
    """Ground mosaic, occupancy, stale sectors and cross-camera object fusion."""

    name = "bev"

    def __init__(self, rig: Rig, cfg: BEVConfig | None = None, *, ground: bool = True) -> None:
        self.cfg = cfg or BEVConfig()
        self.spec = self.cfg.spec()
        self.rig = rig
        self.mosaic = GroundMosaic(self.spec, self.cfg.feather_px) if ground else None
        self.occupancy = OccupancyGrid(self.spec, self.cfg)
        self.last_images: list[np.ndarray | None] = [None] * len(rig)

    def __call__(self, frame: Frame) -> Frame:
        state = BEVState(self.spec)
        usable = [img if (img is not None and ok) else None for img, ok in zip(frame.images, frame.valid or
                                                                                [True] * len(frame.images))]
        if self.mosaic is not None:
            state.ground = self.mosaic(usable, frame.cameras)
        self.occupancy.update(frame.points if frame.points is not None else np.zeros((0, 3), np.float32))
        state.occupancy = self.occupancy.classes()
        stale = np.zeros(self.spec.shape, bool)
        for i, name in enumerate(frame.names):
            if frame.stale[i] or (frame.valid and not frame.valid[i]):
                state.stale_cameras.append(name)
                cam = frame.cameras[i] or self.rig.cameras[i]
                if self.mosaic is not None:
                    stale |= self.mosaic.footprint(cam)
        state.stale = stale
        frame.bev = state
        frame.fused = fuse_objects(frame.objects, self.cfg.merge_dist)
        return frame


class Track:
    name = "track"

    def __init__(self, tracker: Tracker | None = None) -> None:
        self.tracker = tracker or Tracker()

    def __call__(self, frame: Frame) -> Frame:
        frame.tracks = self.tracker.update(frame.fused, frame.timestamp)
        return frame


class SinkStage:
    """Hands the frame to every sink (video, JSONL, window, MJPEG server...)."""

    name = "sinks"

    def __init__(self, sinks: list) -> None:
        self.sinks = sinks

    def __call__(self, frame: Frame) -> Frame:
        failed = None
        for s in self.sinks:  # one failing sink must not keep the frame from the others
            try:
                s.write(frame)
            except Exception as exc:  # noqa: BLE001 - re-raised below, after every sink had the frame
                failed = failed or exc
                log.debug("sink %s failed on frame %d: %s", type(s).__name__, frame.index, exc)
        if failed is not None:
            raise failed
        return frame

    def close(self, summary: dict) -> None:
        for s in self.sinks:
            try:
                s.close(summary)
            except Exception:  # noqa: BLE001 - finalise the other sinks anyway
                log.exception("closing sink %s failed", type(s).__name__)


# ----------------------------------------------------------------------------- timing
class StageTimer:
    def __init__(self, window: int = 1000) -> None:
        self.samples: dict[str, list[float]] = defaultdict(list)
        self.window = window
        self.lock = threading.Lock()

    def add(self, name: str, ms: float) -> None:
        with self.lock:
            s = self.samples[name]
            s.append(ms)
            if len(s) > 2 * self.window:
                del s[: len(s) - self.window]

    def medians(self, last: int | None = None) -> dict[str, float]:
        with self.lock:
            return {k: round(float(np.median(v[-last:] if last else v)), 2) for k, v in self.samples.items() if v}


# ----------------------------------------------------------------------------- engine
@dataclass
class StageGroup:
    """Stages that run one after another in one thread of the pipelined :class:`Engine`.

    ``workers > 1`` runs copies of the group in that many threads, each on its own frames, for
    stateless stages only (preprocess and the network): on a small CPU two networks with one
    torch thread each get more frames through than one network with two threads, because nothing
    waits at the per-operator barriers of a shared thread team while the other stages run. The
    next group gets the frames back in order. ``on_start`` runs first in every thread of the
    group (e.g. to set its torch threads)."""

    stages: list[Any]
    workers: int = 1
    on_start: Callable[[], None] | None = None

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError(f"a stage group needs at least one worker, got {self.workers}")


def frames_from_synchronizer(sync: Synchronizer, names: list[str]) -> Callable[[], Frame | None]:
    """Adapter: the synchroniser's sets as :class:`Frame` objects."""
    def produce() -> Frame | None:
        s = sync.next()
        if s is None:
            return None
        return Frame(s.index, s.timestamp, list(names), s.images, [img is None for img in s.images])
    return produce


class Engine:
    """Run a producer of frames through stage groups in threads (or sequentially).

    ``groups``: lists of stage objects or :class:`StageGroup` s; each group runs in its own
    thread (or threads, see ``StageGroup.workers``), frames pass between groups through queues of
    ``queue_size`` and reach every single-threaded group in the order they were produced.
    ``pipelined=False`` runs everything in the calling thread (simplest to debug, and the baseline
    of the benchmark).
    """

    def __init__(self, produce: Callable[[], Frame | None], groups: list[list[Any] | StageGroup], *,
                 pipelined: bool = True, queue_size: int = 2, max_consecutive_errors: int = 20) -> None:
        specs = [g if isinstance(g, StageGroup) else StageGroup(list(g)) for g in groups]
        self.produce, self.specs = produce, [g for g in specs if g.stages]
        self.pipelined, self.queue_size = pipelined, queue_size
        self.timer = StageTimer()
        self.errors: Counter[str] = Counter()
        self.frames = 0
        self.stop_event = threading.Event()
        self.max_consecutive_errors = max_consecutive_errors
        self._consecutive = 0
        self.fatal: BaseException | None = None
        self.t_start = self.t_end = 0.0
        self._done_times: list[float] = []
        self.on_frame: Callable[[Frame], None] | None = None

    def stop(self) -> None:
        """Ask for a clean stop: no new frames; frames in flight finish; sinks are closed by the caller."""
        self.stop_event.set()

    @property
    def fps(self) -> float:
        if self.frames == 0:
            return 0.0
        end = self.t_end or time.perf_counter()
        return self.frames / max(end - self.t_start, 1e-9)

    def live_stats(self) -> dict[str, Any]:
        recent = self._done_times[-30:]
        fps = (len(recent) - 1) / (recent[-1] - recent[0]) if len(recent) > 1 and recent[-1] > recent[0] else 0.0
        return {"fps": round(fps, 2), "frames": self.frames, "latency_ms": self.timer.medians(last=30)}

    def _run_group(self, group: list[Any], frame: Frame) -> Frame | None:
        for stage in group:
            t0 = time.perf_counter()
            try:
                frame = stage(frame)
            except Exception as exc:  # noqa: BLE001 - one bad frame must not end the run
                self.errors[f"stage_{stage.name}"] += 1
                self._consecutive += 1
                if self._consecutive == 1 or self._consecutive >= self.max_consecutive_errors:
                    log.exception("stage '%s' failed on frame %d", stage.name, frame.index)
                if self._consecutive >= self.max_consecutive_errors or getattr(exc, "stops_run", False):
                    self.fatal = exc
                    self.stop()
                if getattr(stage, "essential", True):
                    return None  # later stages need what this one makes: the frame is dropped
                continue  # e.g. rendering: the other outputs (JSONL, BEV) of the frame still go out
            ms = (time.perf_counter() - t0) * 1e3
            frame.timings[stage.name] = ms
            self.timer.add(stage.name, ms)
        return frame

    def _finish(self, frame: Frame) -> None:
        self._consecutive = 0
        total = (time.perf_counter() - frame.t_start) * 1e3
        frame.timings["total"] = total
        self.timer.add("total", total)
        self.frames += 1
        self._done_times.append(time.perf_counter())
        if len(self._done_times) > 100:
            del self._done_times[:50]
        for k, v in frame.errors.items():
            self.errors[k] += v
        if self.on_frame is not None:
            self.on_frame(frame)

    def _next(self, max_frames: int | None, produced: int) -> Frame | None:
        if self.stop_event.is_set() or (max_frames is not None and produced >= max_frames):
            return None
        t0 = time.perf_counter()
        frame = self.produce()
        if frame is None:
            return None
        self.timer.add("sync", (time.perf_counter() - t0) * 1e3)
        frame.t_start = time.perf_counter()
        frame.stats = self.live_stats()
        return frame

    def run(self, max_frames: int | None = None) -> None:
        """Process frames until the producer ends, ``max_frames`` or :meth:`stop`."""
        self.t_start = time.perf_counter()
        try:
            if not self.pipelined:
                produced = 0
                while (frame := self._next(max_frames, produced)) is not None:
                    produced += 1
                    for spec in self.specs:
                        frame = self._run_group(spec.stages, frame)
                        if frame is None:
                            break
                    if frame is not None:
                        self._finish(frame)
            else:
                self._run_pipelined(max_frames)
        finally:
            self.t_end = time.perf_counter()
        if getattr(self.fatal, "stops_run", False):
            raise self.fatal  # e.g. an output file that cannot be written: its own clear message
        if self.fatal is not None:
            raise RuntimeError(f"pipeline stopped after repeated failures: {self.fatal}") from self.fatal

    def _run_pipelined(self, max_frames: int | None) -> None:
        # queue items: (sequence number, Frame or None for a frame dropped on the way). A queue
        # ends when its writers have closed it and it is empty; no end-of-stream item is sent,
        # because a put gives up on a full queue once the run has failed, and a lost end mark
        # would leave the next group waiting forever.
        queues = [queue.Queue(maxsize=self.queue_size) for _ in self.specs]
        closed = [threading.Event() for _ in self.specs]
        running = [g.workers for g in self.specs]
        lock = threading.Lock()

        def put(q: queue.Queue, item: Any) -> None:
            while True:
                try:
                    q.put(item, timeout=0.1)
                    return
                except queue.Full:
                    if self.fatal is not None:
                        return  # the run is ending: the frame is dropped

        def items(k: int) -> Iterator[tuple[int, Frame | None]]:
            """What reaches queue ``k``, until its writers have closed it and it is drained."""
            while True:
                try:
                    yield queues[k].get(timeout=0.1)
                except queue.Empty:
                    if closed[k].is_set() and queues[k].empty():  # closed after the last put
                        return

        def producer() -> None:
            produced = 0
            try:
                while (frame := self._next(max_frames, produced)) is not None:
                    put(queues[0], (produced, frame))
                    produced += 1
            except Exception as exc:  # noqa: BLE001
                log.exception("frame producer failed")
                self.fatal = exc
            finally:
                closed[0].set()

        def in_order(k: int) -> Iterator[tuple[int, Frame | None]]:
            """The items of queue ``k`` sorted by sequence number (upstream copies finish out of order)."""
            pending: dict[int, Frame | None] = {}
            expected = 0
            for seq, frame in items(k):
                pending[seq] = frame
                while expected in pending:
                    yield expected, pending.pop(expected)
                    expected += 1
            yield from sorted(pending.items())  # only after a failure upstream left a gap

        def worker(k: int) -> None:
            spec = self.specs[k]
            q_out = queues[k + 1] if k + 1 < len(queues) else None
            try:
                if spec.on_start is not None:
                    spec.on_start()
                for seq, frame in (items(k) if spec.workers > 1 else in_order(k)):
                    if frame is not None:
                        frame = self._run_group(spec.stages, frame)
                    if q_out is not None:
                        put(q_out, (seq, frame))
                    elif frame is not None:
                        self._finish(frame)
            finally:
                with lock:
                    running[k] -= 1
                    last = running[k] == 0
                if last and q_out is not None:
                    closed[k + 1].set()

        threads = [threading.Thread(target=producer, name="pipeline-sync", daemon=True)]
        threads += [threading.Thread(target=worker, args=(k,), name=f"pipeline-{k}.{w}", daemon=True)
                    for k, spec in enumerate(self.specs) for w in range(spec.workers)]
        for t in threads:
            t.start()
        # join with a timeout so that the main thread keeps handling signals (Ctrl-C)
        for t in threads:
            while t.is_alive():
                t.join(0.1)
