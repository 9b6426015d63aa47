"""Frames from a video file, an image folder or a glob, read with OpenCV, for code below the
dataset readers (the camera policy in :mod:`perception.geometry.source_camera` probes a source's
frame size and samples frames for the lane-based mount estimate)."""

from __future__ import annotations

import glob as globlib
import re
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from perception.utils.image_io import DataError, read_image

__all__ = ["IMAGE_EXTENSIONS", "natural_key", "is_file_source", "list_images", "FileFrames"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def natural_key(path: str | Path) -> list:
    """Sort key that puts ``img2`` before ``img10``."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", str(path))]


def is_file_source(source: str | Path) -> bool:
    """A video file, an image file, an image folder or a glob (not a camera index, URL or pipeline)."""
    s = str(source)
    return any(c in s for c in "*?[") or Path(s).exists()


def list_images(source: str | Path) -> list[str] | None:
    """The image files of a folder, glob or single image (natural order); None for a video file."""
    s, p = str(source), Path(source)
    if any(c in s for c in "*?["):
        files = sorted((f for f in globlib.glob(s) if Path(f).is_file()), key=natural_key)
        if not files:
            raise DataError(f"{s}: no files match")
        return files
    if p.is_dir():
        files = sorted((str(f) for f in p.iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS), key=natural_key)
        if not files:
            raise DataError(f"{p}: folder has no images ({', '.join(IMAGE_EXTENSIONS)})")
        return files
    if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS:
        return [s]
    if not p.is_file():
        raise DataError(f"{p}: no such file or folder")
    return None


class FileFrames:
    """One opened file source: ``size`` (width, height) of its first frame, ``frame_count``, ``fps`` and
    :meth:`sample` (RGB frames spread over the first frames)."""

    def __init__(self, source: str | Path) -> None:
        self.source = str(source)
        self.files = list_images(source)
        self.fps = 0.0  # of a video file as its container says (0: unknown)
        self._cap: cv2.VideoCapture | None = None   # a video stays open for one sample() pass
        self._first: np.ndarray | None = None
        if self.files is not None:
            first = read_image(self.files[0])
            self.frame_count = len(self.files)
        else:
            cap = cv2.VideoCapture(self.source)
            if not cap.isOpened():
                cap.release()
                raise DataError(f"{self.source}: cannot open video (corrupt or unsupported format)")
            self.frame_count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
            self.fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
            ok, first = cap.read()
            if not ok:
                cap.release()
                raise DataError(f"{self.source}: video has no decodable frame (corrupt or truncated)")
            self._cap, self._first = cap, first
        self.size = (int(first.shape[1]), int(first.shape[0]))

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = self._first = None

    def __enter__(self) -> "FileFrames":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def sample(self, max_frames: int, scan_frames: int) -> Iterator[np.ndarray]:
        """Up to ``max_frames`` RGB frames evenly spread over the first ``scan_frames``
        (a video is read on from the capture that probed it, so it is opened once)."""
        stride = max(1, min(max(self.frame_count, 1), scan_frames) // max(1, max_frames))
        if self.files is not None:
            for f in self.files[:scan_frames:stride][:max_frames]:
                yield read_image(f)
            return
        cap, first = self._cap, self._first
        self._cap = self._first = None
        if cap is None:
            cap = cv2.VideoCapture(self.source)
            ok, first = cap.read()
            if not ok:
                cap.release()
                return
        try:
            frame, i, emitted = first, 0, 0
            while emitted < max_frames and i < scan_frames:
                if i % stride == 0:
                    yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
                    emitted += 1
                i += 1
                ok, frame = cap.read()
                if not ok:
                    return
        finally:
            cap.release()
