"""Sinks: where rendered frames and results go. Each has ``write(frame)`` and ``close(summary)``.

- :class:`VideoSink` ``video.mp4`` (``cv2.VideoWriter``, mp4v), opened on the first frame;
- :class:`JsonlSink` ``detections.jsonl``, one complete line per frame, flushed per frame, so an
  interrupted run leaves only whole lines;
- :class:`BEVImageSink` ``bev.png``, the BEV of the last frame (written on close);
- :class:`WindowSink` an OpenCV window (``--show``), refused clearly on headless OpenCV builds;
- :class:`ServerSink` feeds the MJPEG server (``--serve``);
- :func:`write_summary` ``summary.json`` (DESIGN.md section 6).

Boxes in ``detections.jsonl`` are in pixels of the source image (the camera's native size);
``objects`` are the confirmed tracks in the ego frame.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np

log = logging.getLogger(__name__)

MIN_FREE_BYTES = 32 * 2**20  # room the video writer needs to finalise its file

__all__ = ["VideoSink", "JsonlSink", "BEVImageSink", "WindowSink", "ServerSink", "frame_record", "write_summary",
           "gui_available", "SUMMARY_KEYS"]

# DESIGN.md section 6, plus "interrupted": true when a signal stopped the run
SUMMARY_KEYS = ("frames", "fps", "latency_ms", "dropped_frames", "errors", "model", "backend", "device", "interrupted")


def _r(x: float, nd: int = 3) -> float:
    return round(float(x), nd)


def frame_record(frame) -> dict[str, Any]:
    """The ``detections.jsonl`` object of one frame (DESIGN.md section 6)."""
    cams: dict[str, list] = {}
    for i, name in enumerate(frame.names):
        rows = []
        plan = frame.resizes[i] if frame.resizes else None
        if frame.valid and frame.valid[i] and plan is not None:
            for obj in frame.objects:
                if obj.camera != name:
                    continue
                x1, y1, x2, y2 = plan.to_source(obj.box)[0]
                rows.append({"box": [_r(x1, 1), _r(y1, 1), _r(x2, 1), _r(y2, 1)],
                             "score": _r(obj.score), "label": obj.label})
        cams[name] = rows
    objects = [{"id": int(t.id), "label": t.label, "center": [_r(v) for v in t.center],
                "size": [_r(v) for v in t.size], "yaw": _r(t.yaw, 4), "velocity": [_r(v) for v in t.velocity],
                "cameras": list(t.cameras)} for t in frame.tracks]
    return {"frame": int(frame.index), "timestamp": _r(frame.timestamp, 4), "cameras": cams, "objects": objects}


class VideoSink:
    def __init__(self, path: str | Path, fps: float = 10.0) -> None:
        self.path, self.fps = Path(path), float(fps) if fps and fps > 0 else 10.0
        self.writer: cv2.VideoWriter | None = None
        self.size: tuple[int, int] | None = None
        self.last: np.ndarray | None = None
        self.frames = 0

    def _check_space(self) -> None:
        """OpenCV's writer reports no write errors: stop while there is still room to finalise
        the mp4 (its index is written at the end) instead of leaving an unplayable file."""
        free = shutil.disk_usage(self.path.parent).free
        if free < MIN_FREE_BYTES:
            raise OutputWriteError(errno.ENOSPC, f"{self.path.parent}: disk almost full ({free / 2**20:.0f} MB free); "
                                                 "stopping so that the video can be finalised")

    def write(self, frame) -> None:
        if self.frames % 10 == 0:
            self._check_space()
        img = frame.canvas
        if img is None:  # rendering failed on this frame: repeat the last picture, so that the
            if self.writer is None or self.last is None:  # video keeps one frame per JSONL line
                return
            img = self.last
        self.last = img
        h, w = img.shape[:2]
        if self.writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.size = (w - w % 2, h - h % 2)
            self.writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, self.size)
            if not self.writer.isOpened():
                raise OSError(f"{self.path}: cannot open a video writer (mp4v)")
        if (w, h) != self.size:
            img = cv2.resize(img, self.size) if abs(w - self.size[0]) > 1 or abs(h - self.size[1]) > 1 \
                else img[:self.size[1], :self.size[0]]
        self.writer.write(np.ascontiguousarray(img))
        self.frames += 1

    def close(self, summary: dict | None = None) -> None:
        if self.writer is not None:
            self.writer.release()
            self.writer = None


class OutputWriteError(OSError):
    """An output file could not be written (full disk, removed folder...): the run stops cleanly."""

    stops_run = True  # the engine ends the run at once instead of counting and going on


class JsonlSink:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fh = open(self.path, "wb")
        self.lines = 0
        self.good_bytes = 0   # end of the last complete line
        self.failed = False   # after a write error the run is stopping: frames still in flight are not written

    def write(self, frame) -> None:
        if self.failed:
            return
        line = (json.dumps(frame_record(frame), separators=(",", ":")) + "\n").encode()
        try:
            self.fh.write(line)   # one write call per complete line
            self.fh.flush()
        except OSError as exc:
            self.failed = True
            self._truncate_to_complete_lines()
            raise OutputWriteError(exc.errno, f"{self.path}: cannot write ({exc.strerror or exc}); "
                                              f"{self.lines} complete lines kept") from None
        self.lines += 1
        self.good_bytes += len(line)

    def _truncate_to_complete_lines(self) -> None:
        """Drop a partly written last line (the buffer is discarded, the file cut back)."""
        try:
            self.fh.close()
        except OSError:
            pass  # flushing the rest of the failed line failed again, as expected
        try:
            os.truncate(self.path, self.good_bytes)
        except OSError as exc:
            log.error("%s: could not cut back the partial last line: %s", self.path, exc)

    def close(self, summary: dict | None = None) -> None:
        if not self.fh.closed:
            try:
                self.fh.flush()
                os.fsync(self.fh.fileno())
                self.fh.close()
            except OSError as exc:
                self._truncate_to_complete_lines()
                log.error("%s: %s; %d complete lines kept", self.path, exc, self.lines)


class BEVImageSink:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.last: np.ndarray | None = None

    def write(self, frame) -> None:
        if frame.bev_image is not None:
            self.last = frame.bev_image

    def close(self, summary: dict | None = None) -> None:
        if self.last is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp.png")
            cv2.imwrite(str(tmp), self.last)
            os.replace(tmp, self.path)


def gui_available() -> bool:
    """Whether this OpenCV build can open windows (opencv-python-headless cannot)."""
    info = cv2.getBuildInformation()
    section = info.split("GUI:", 1)[1].split("\n\n", 1)[0] if "GUI:" in info else ""
    if not section.strip() or "NONE" in section.upper().split("\n", 1)[0]:
        return False
    try:
        cv2.namedWindow("__probe__", cv2.WINDOW_AUTOSIZE)
        cv2.destroyWindow("__probe__")
        return True
    except cv2.error:
        return False


class WindowSink:
    def __init__(self, title: str = "perception", on_quit: Callable[[], None] | None = None) -> None:
        if not gui_available():
            raise RuntimeError("--show needs an OpenCV build with GUI support; this one has none "
                               "(opencv-python-headless). Install opencv-python, or use --serve PORT instead")
        self.title, self.on_quit = title, on_quit

    def write(self, frame) -> None:
        if frame.canvas is None:
            return
        cv2.imshow(self.title, frame.canvas)
        if (cv2.waitKey(1) & 0xFF) in (ord("q"), 27) and self.on_quit:
            self.on_quit()

    def close(self, summary: dict | None = None) -> None:
        try:
            cv2.destroyWindow(self.title)
        except cv2.error:
            pass


class ServerSink:
    def __init__(self, server, stats: Callable[[], dict]) -> None:
        self.server, self.stats = server, stats

    def write(self, frame) -> None:
        if frame.canvas is not None:
            self.server.update(frame.canvas, self.stats())

    def close(self, summary: dict | None = None) -> None:
        if summary is not None:
            self.server.update(None, dict(summary, finished=True))


def write_summary(path: str | Path, summary: dict[str, Any]) -> None:
    """``summary.json`` with the keys of DESIGN.md section 6 and ``interrupted`` (written atomically)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {k: summary[k] for k in SUMMARY_KEYS if k in summary}
    tmp = path.with_suffix(".tmp")
    try:
        tmp.write_text(json.dumps(data, indent=2))
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)  # never leave a stray summary.tmp
        raise OutputWriteError(exc.errno, f"{path}: cannot write ({exc.strerror or exc})") from None
