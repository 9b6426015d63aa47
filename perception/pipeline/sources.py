"""Frame sources: one object per camera that yields ``(ok, rgb_image, timestamp)``.

``open_source(spec)`` understands:

- a video file (``drive.mp4``), an image folder or a glob (``frames/*.jpg``);
- a webcam index (``0``) or a V4L2 device (``/dev/video0``);
- an RTSP/HTTP(S) URL (``rtsp://...``);
- a GStreamer pipeline string (contains ``!``, e.g. Jetson CSI
  ``nvarguscamerasrc ! video/x-raw(memory:NVMM),width=1280,height=720 ! nvvidconv ! video/x-raw,format=BGRx !
  videoconvert ! video/x-raw,format=BGR ! appsink``), opened with ``cv2.CAP_GSTREAMER``;
- ``synth://`` the synthetic world rendered live (``synth://?seed=3&camera=front``).

File sources (``live = False``) time their frames by index / fps, so the cameras of one
recorded clip line up exactly; live sources stamp frames with the monotonic clock at capture.
A source never raises on a bad frame: ``read()`` returns ``ok = False`` and the reason is in
:attr:`Source.last_error`; decode errors are counted in :attr:`Source.errors`.
"""

from __future__ import annotations

import glob as globlib
import logging
import re
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import cv2
import numpy as np

from perception.data.readers.common import IMAGE_EXTENSIONS
from perception.data.readers.video import natural_key

log = logging.getLogger(__name__)

__all__ = ["Source", "SourceError", "VideoFileSource", "ImageFolderSource", "CaptureDeviceSource",
           "SynthSource", "open_source", "source_kind"]


class SourceError(RuntimeError):
    """A source cannot be opened at all (bad path, no such device, unsupported backend)."""


class Source:
    """Base class. Subclasses implement :meth:`_open`, :meth:`_read`, :meth:`_close`."""

    live: bool = False   # True: wall-clock timestamps, reconnect on failure, drop when late
    kind: str = "source"

    def __init__(self, spec: str, name: str = "") -> None:
        self.spec, self.name = str(spec), name or str(spec)
        self.fps: float = 0.0
        self.frame_count: int = 0     # 0 when unknown (live)
        self.errors: Counter[str] = Counter()
        self.last_error: str = ""
        self.finished = False         # end of a file source
        self._is_open = False

    # -- public API
    def open(self) -> None:
        """Open (or re-open) the source; raises :class:`SourceError` when that is impossible."""
        self._open()
        self._is_open = True

    def read(self) -> tuple[bool, np.ndarray | None, float]:
        """``(ok, image RGB uint8 HxWx3, timestamp s)``; ``ok=False`` with ``finished`` at the end."""
        if not self._is_open:
            self.open()
        return self._read()

    def close(self) -> None:
        if self._is_open:
            self._close()
        self._is_open = False

    def __enter__(self) -> "Source":
        self.open()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec!r})"

    # -- to implement
    def _open(self) -> None:
        raise NotImplementedError

    def _read(self) -> tuple[bool, np.ndarray | None, float]:
        raise NotImplementedError

    def _close(self) -> None:
        pass


def _bgr_to_rgb(frame: np.ndarray) -> np.ndarray:
    if frame.ndim == 2:
        return cv2.cvtColor(frame, cv2.COLOR_GRAY2RGB)
    if frame.shape[2] == 4:
        return cv2.cvtColor(frame, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)


class VideoFileSource(Source):
    """A recorded video. Undecodable frames are skipped and counted (``errors['decode']``): after a
    failed read up to ``max_skip`` further reads are tried, so everything after a corrupt stretch
    that can still be decoded is delivered. Stopping before the container's frame count is
    counted as ``errors['truncated']``. (An MP4 cut before its index (``moov``) cannot be opened
    at all: that is an open error.)"""

    kind = "video"

    def __init__(self, spec: str, name: str = "", *, loop: bool = False, max_skip: int = 30,
                 fallback_fps: float = 10.0) -> None:
        super().__init__(spec, name)
        self.loop, self.max_skip, self.fallback_fps = loop, max_skip, fallback_fps
        self._cap: cv2.VideoCapture | None = None
        self._index = 0
        self._loops = 0
        self.delivered = 0

    def _open(self) -> None:
        if not Path(self.spec).is_file():
            raise SourceError(f"{self.spec}: no such video file")
        cap = cv2.VideoCapture(self.spec)
        if not cap.isOpened():
            raise SourceError(f"{self.spec}: cannot open video (corrupt or unsupported format)")
        self._cap = cap
        self.fps = float(cap.get(cv2.CAP_PROP_FPS)) or self.fallback_fps
        if not (0 < self.fps < 1000):
            self.fps = self.fallback_fps
        self.frame_count = max(0, int(cap.get(cv2.CAP_PROP_FRAME_COUNT)))
        self._index = 0

    def _read(self) -> tuple[bool, np.ndarray | None, float]:
        assert self._cap is not None
        if self.finished:
            return False, None, 0.0
        failures = 0
        while True:
            try:
                ok, frame = self._cap.read()
            except cv2.error as exc:  # some builds raise on broken packets
                ok, frame = False, None
                self.last_error = str(exc).splitlines()[0]
            if ok and frame is not None and frame.size:
                if failures:  # frames were lost in the middle of the file
                    self.errors["decode"] += failures
                    log.warning("%s: %d undecodable frame(s) before frame %d; skipped", self.name, failures,
                                self._index)
                pos = int(self._cap.get(cv2.CAP_PROP_POS_FRAMES)) - 1
                self._index = pos if pos >= self._index else self._index   # container position when sane
                ts = (self._index + self._loops * max(self.frame_count, 1)) / self.fps
                self._index += 1
                self.delivered += 1
                return True, _bgr_to_rgb(frame), ts
            failures += 1
            if failures < self.max_skip:
                continue
            # the end (or a tail that never decodes again)
            if self.frame_count and self.delivered + self.errors["decode"] < self.frame_count - 1 and not self._loops:
                self.errors["truncated"] += 1
                log.warning("%s: decoding stopped after %d of %d frames (truncated or corrupt video)",
                            self.name, self.delivered, self.frame_count)
            if self.loop and self.delivered > 0:
                self._loops += 1
                self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
                self._index = 0
                failures = 0
                continue
            self.finished = True
            return False, None, 0.0

    def _close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


class ImageFolderSource(Source):
    """An image folder or a glob, in natural order; unreadable images are skipped and counted."""

    kind = "images"

    def __init__(self, spec: str, name: str = "", *, fps: float = 10.0, loop: bool = False) -> None:
        super().__init__(spec, name)
        self.fps, self.loop = fps, loop
        self.files: list[str] = []
        self._i = 0

    def _open(self) -> None:
        if any(c in self.spec for c in "*?["):
            files = [p for p in globlib.glob(self.spec) if Path(p).is_file()]
        elif Path(self.spec).is_dir():
            files = [str(p) for p in Path(self.spec).iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS]
        elif Path(self.spec).is_file():
            files = [self.spec]
        else:
            raise SourceError(f"{self.spec}: no such file or folder")
        if not files:
            raise SourceError(f"{self.spec}: no images found ({', '.join(IMAGE_EXTENSIONS)})")
        self.files = sorted(files, key=natural_key)
        self.frame_count = len(self.files)
        self._i = 0

    def _read(self) -> tuple[bool, np.ndarray | None, float]:
        while True:
            if self._i >= len(self.files):
                if self.loop:
                    self._i = 0
                else:
                    self.finished = True
                    return False, None, 0.0
            i = self._i
            self._i += 1
            img = cv2.imread(self.files[i], cv2.IMREAD_COLOR)
            if img is None or not img.size:
                self.errors["decode"] += 1
                self.last_error = f"cannot read image {self.files[i]}"
                log.warning("%s: %s; skipping", self.name, self.last_error)
                continue
            return True, _bgr_to_rgb(img), i / self.fps


class CaptureDeviceSource(Source):
    """A live camera: webcam index, V4L2 device, RTSP/HTTP URL or GStreamer pipeline string."""

    live = True

    def __init__(self, spec: str, name: str = "", *, api: int | None = None, width: int | None = None,
                 height: int | None = None, kind: str = "camera") -> None:
        super().__init__(spec, name)
        self.api, self.width, self.height, self.kind = api, width, height, kind
        self._cap: cv2.VideoCapture | None = None

    def _target(self) -> int | str:
        return int(self.spec) if self.spec.isdigit() else self.spec

    def _open(self) -> None:
        target = self._target()
        cap = cv2.VideoCapture(target, self.api) if self.api is not None else cv2.VideoCapture(target)
        if not cap.isOpened():
            cap.release()
            hint = ""
            if self.api == cv2.CAP_GSTREAMER and "GStreamer:                   NO" in cv2.getBuildInformation():
                hint = " (this OpenCV build has no GStreamer support)"
            raise SourceError(f"{self.spec}: cannot open {self.kind}{hint}")
        if self.width and self.height:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
        self.fps = float(cap.get(cv2.CAP_PROP_FPS)) or 30.0
        self._cap = cap

    def _read(self) -> tuple[bool, np.ndarray | None, float]:
        assert self._cap is not None
        ok, frame = self._cap.read()
        if not ok or frame is None:
            self.last_error = f"{self.kind} returned no frame"
            return False, None, time.monotonic()
        return True, _bgr_to_rgb(frame), time.monotonic()

    def _close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


class _SynthWorld:
    """One live synthetic world shared by the ``synth://`` sources of a rig: rendered once per
    tick for all cameras, each camera's source takes its image. Lazy: imports the renderer
    (:mod:`perception.data.synth`) only when a ``synth://`` source is opened."""

    _shared: dict[str, "_SynthWorld"] = {}
    _lock = threading.Lock()

    def __init__(self, params: dict[str, str]) -> None:
        try:
            from perception.data.synth import Renderer, World, make_front_wide, make_surround6
        except ImportError as exc:
            raise SourceError(f"synth://: the synthetic renderer is not available ({exc})") from None
        from perception.geometry import Rig

        rig_name = params.get("rig", "surround6")
        if rig_name == "surround6":
            rig = make_surround6()
        elif rig_name == "front_wide":
            rig = make_front_wide()
        elif Path(rig_name).is_file():
            rig = Rig.load(rig_name)
        else:
            raise SourceError(f"synth://: unknown rig {rig_name!r} (surround6, front_wide or a rig YAML path)")
        h, w = (int(v) for v in params.get("size", "256x448").lower().split("x"))
        self.rig = rig.scaled(w, h)
        self.world = World(seed=int(params.get("seed", 0)))
        self.renderer = Renderer(self.rig)
        self.fps = float(params.get("fps", 10))
        self._frames: dict[int, Any] = {}
        self._next = 0
        self._lock_frames = threading.Lock()

    @classmethod
    def get(cls, key: str, params: dict[str, str]) -> "_SynthWorld":
        with cls._lock:
            if key not in cls._shared:
                cls._shared[key] = cls(params)
            return cls._shared[key]

    @classmethod
    def release(cls, key: str) -> None:
        with cls._lock:
            cls._shared.pop(key, None)

    def frame(self, index: int) -> Any:
        """The rendered :class:`Sample` of tick ``index`` (rendered once, shared by all cameras)."""
        with self._lock_frames:
            while self._next <= index:
                self._frames[self._next] = self.renderer(self.world)
                self.world.step(1.0 / self.fps)
                self._next += 1
            for old in [k for k in self._frames if k < index - 8]:
                del self._frames[old]
            return self._frames.get(index)


class SynthSource(Source):
    """``synth://?seed=S&camera=NAME&rig=surround6&size=256x448&fps=F&frames=N``: one camera of a
    live synthetic world (all cameras of one spec share one world and one render per tick).
    The CPU renderer takes seconds per six-camera frame; use a GPU or the pre-rendered
    ``data/sample_drive/`` for real-time work."""

    kind = "synth"

    def __init__(self, spec: str, name: str = "") -> None:
        super().__init__(spec, name)
        parsed = urlparse(self.spec)
        self.params = {k: v[-1] for k, v in parse_qs(parsed.query).items()}
        self.camera = self.params.get("camera", name or "front")
        self.max_frames = int(self.params["frames"]) if "frames" in self.params else 0
        self._i = 0
        self._world: _SynthWorld | None = None

    def _open(self) -> None:
        self._key = "&".join(f"{k}={v}" for k, v in sorted(self.params.items()) if k != "camera")
        self._world = _SynthWorld.get(self._key, self.params)
        if self.camera not in self._world.rig.names:
            raise SourceError(f"{self.spec}: the synthetic rig has no camera {self.camera!r} "
                              f"(has {', '.join(self._world.rig.names)})")
        self.fps = self._world.fps
        self.frame_count = self.max_frames

    @property
    def camera_model(self):
        """The calibrated :class:`Camera` of this synthetic camera (after :meth:`open`)."""
        if self._world is None:
            self.open()
        return self._world.rig[self.camera]

    def _read(self) -> tuple[bool, np.ndarray | None, float]:
        assert self._world is not None
        if self.max_frames and self._i >= self.max_frames:
            self.finished = True
            return False, None, 0.0
        sample = self._world.frame(self._i)
        idx = sample.camera_names.index(self.camera)
        ts = self._i / self.fps
        self._i += 1
        return True, sample.images[idx], ts


_URL = re.compile(r"^(rtsp|rtsps|rtmp|http|https|udp|tcp)://", re.I)


def source_kind(spec: str) -> str:
    """Which kind of source a spec names: synth, gstreamer, url, camera, images or video."""
    s = str(spec).strip()
    if s.startswith("synth://"):
        return "synth"
    if "!" in s:
        return "gstreamer"
    if _URL.match(s):
        return "url"
    if s.isdigit() or s.startswith("/dev/video"):
        return "camera"
    if any(c in s for c in "*?[") or Path(s).is_dir() or Path(s).suffix.lower() in IMAGE_EXTENSIONS:
        return "images"
    return "video"


def open_source(spec: str | int, name: str = "", *, loop: bool = False, fps: float = 10.0) -> Source:
    """A :class:`Source` for a spec string (not opened yet; the capture thread opens it)."""
    s = str(spec).strip()
    kind = source_kind(s)
    if kind == "synth":
        return SynthSource(s, name)
    if kind == "gstreamer":
        return CaptureDeviceSource(s, name, api=cv2.CAP_GSTREAMER, kind="gstreamer pipeline")
    if kind == "url":
        return CaptureDeviceSource(s, name, api=cv2.CAP_FFMPEG, kind="stream")
    if kind == "camera":
        api = cv2.CAP_V4L2 if s.startswith("/dev/video") else None
        return CaptureDeviceSource(s, name, api=api, kind="camera")
    if kind == "images":
        return ImageFolderSource(s, name, fps=fps, loop=loop)
    return VideoFileSource(s, name, loop=loop, fallback_fps=fps)
