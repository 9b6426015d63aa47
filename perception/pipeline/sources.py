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
    """A recorded video. A corrupt or truncated stretch is skipped and counted (``errors['decode']``):
    when a read fails before the container's frame count, the next ``max_skip`` frames are tried
    before giving up, so everything that can be decoded is delivered."""

    kind = "video"

    def __init__(self, spec: str, name: str = "", *, loop: bool = False, max_skip: int = 30,
                 fallback_fps: float = 10.0) -> None:
        super().__init__(spec, name)
        self.loop, self.max_skip, self.fallback_fps = loop, max_skip, fallback_fps
        self._cap: cv2.VideoCapture | None = None
        self._index = 0
        self._loops = 0

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
        skipped = 0
        while True:
            try:
                ok, frame = self._cap.read()
            except cv2.error as exc:  # some builds raise on broken packets
                ok, frame = False, None
                self.last_error = str(exc).splitlines()[0]
            if ok and frame is not None and frame.size:
                ts = (self._index + self._loops * max(self.frame_count, 1)) / self.fps
                self._index += 1
                return True, _bgr_to_rgb(frame), ts
            # a failed read: the end, or a broken frame in the middle
            if self.frame_count and self._index < self.frame_count - 1 and skipped < self.max_skip:
                self.errors["decode"] += 1
                self.last_error = f"cannot decode frame {self._index} of {self.frame_count}"
                log.warning("%s: %s; skipping", self.name, self.last_error)
                self._index += 1
                skipped += 1
                self._cap.set(cv2.CAP_PROP_POS_FRAMES, self._index)
                continue
            if self.frame_count and self._index < self.frame_count - 1:
                self.errors["truncated"] += 1
                log.warning("%s: decoding stopped at frame %d of %d (truncated or corrupt video)",
                            self.name, self._index, self.frame_count)
            if self.loop and self._index > 0:
                self._loops += 1
                self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
                self._index = 0
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
    tick for all cameras, each camera's source takes its image. Lazy: imports the renderer only
    when a ``synth://`` source is opened."""

    _shared: dict[str, "_SynthWorld"] = {}
    _lock = threading.Lock()

    def __init__(self, key: str, params: dict[str, str]) -> None:
        try:
            from perception.data import synth as synth_mod  # noqa: F401
            from perception.data.synth import SynthDataset  # type: ignore[attr-defined]
        except ImportError as exc:
            raise SourceError(f"synth://: the synthetic renderer is not available ({exc})") from None
        seed = int(params.get("seed", 0))
        fps = float(params.get("fps", 10))
        kwargs: dict[str, Any] = {"seed": seed}
        if "rig" in params:
            kwargs["rig"] = params["rig"]
        if "size" in params:
            h, w = (int(v) for v in params["size"].lower().split("x"))
            kwargs["size"] = (h, w)
        try:
            self.dataset = SynthDataset(**kwargs)
        except TypeError:
            self.dataset = SynthDataset(seed=seed)
        self.fps = fps
        self.key = key
        self._frames: dict[int, Any] = {}
        self._cond = threading.Condition()

    @classmethod
    def get(cls, key: str, params: dict[str, str]) -> "_SynthWorld":
        with cls._lock:
            if key not in cls._shared:
                cls._shared[key] = cls(key, params)
            return cls._shared[key]

    def frame(self, index: int) -> Any:
        with self._cond:
            if index not in self._frames:
                self._frames[index] = self.dataset[index]
                for old in [k for k in self._frames if k < index - 4]:
                    del self._frames[old]
            return self._frames[index]


class SynthSource(Source):
    """``synth://?seed=S&camera=NAME&fps=F&frames=N``: one camera of a live synthetic world."""

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
        key = "&".join(f"{k}={v}" for k, v in sorted(self.params.items()) if k != "camera")
        self._world = _SynthWorld.get(key, self.params)
        self.fps = self._world.fps
        self.frame_count = self.max_frames

    def _read(self) -> tuple[bool, np.ndarray | None, float]:
        assert self._world is not None
        if self.max_frames and self._i >= self.max_frames:
            self.finished = True
            return False, None, 0.0
        sample = self._world.frame(self._i)
        names = [c.name for c in sample.cameras]
        idx = names.index(self.camera) if self.camera in names else 0
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
