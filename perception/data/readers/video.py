"""Frames of a video file, an image folder or a glob as :class:`Sample` (no ground truth).

The camera comes from a calibration YAML (a rig or a single-camera file, see
:meth:`perception.geometry.Rig.load`), a :class:`Camera`, or, without one, the package's one
calibration policy (:func:`perception.geometry.camera_for_source`, without the lane-measured
mount: pass its camera to get that).
When a frame's size differs from the calibration, ``K`` is scaled to the frame
(:meth:`Camera.scaled`) with a logged warning, once per size.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from perception.data.readers.common import DataError, read_image
from perception.data.sample import Sample
from perception.geometry.camera import Camera, Rig
from perception.geometry.source_camera import camera_for_source, load_camera
from perception.utils.video_io import FileFrames, natural_key

log = logging.getLogger(__name__)

__all__ = ["VideoReader", "load_camera", "natural_key"]


class VideoReader:
    """Iterate a video / image folder / glob as single-camera :class:`Sample` objects.

    ``timestamp`` is seconds from the first frame (``frame / fps`` for videos, ``frame / fps``
    with the given ``fps`` for images); ``frame_id`` names the source and frame index.
    ``stride`` keeps every n-th frame; ``max_frames`` stops early.
    """

    def __init__(self, source: str | Path, calib: str | Path | Rig | Camera | None = None, *,
                 camera: str | None = None, fps: float = 10.0, stride: int = 1,
                 max_frames: int | None = None) -> None:
        self.source = str(source)
        self.stride, self.max_frames = max(1, int(stride)), max_frames
        self.calib_camera = load_camera(calib, camera) if calib is not None else None
        self._warned: set[tuple[int, int]] = set()
        opened = FileFrames(self.source)  # DataError for a missing, empty or undecodable source
        opened.close()
        self.frame_count = opened.frame_count
        if opened.files is not None:
            self.files, self.kind, self.fps = opened.files, "images", fps
        else:
            self.files, self.kind, self.fps = [self.source], "video", opened.fps or fps

    def __len__(self) -> int:
        n = math.ceil(self.frame_count / self.stride)
        return min(n, self.max_frames) if self.max_frames is not None else n

    def camera_for(self, width: int, height: int) -> Camera:
        """The calibrated camera, scaled (with a warning) when the frame size differs."""
        cam = self.calib_camera
        if cam is None:  # the package's default camera (logged once by camera_for_source)
            cam = self.calib_camera = camera_for_source(self.source, None, auto_mount=False)
        if (width, height) == cam.size:
            return cam
        if (width, height) not in self._warned:
            self._warned.add((width, height))
            aspect = abs(width / height - cam.width / cam.height) > 0.01
            log.warning("%s: frame size %dx%d differs from the calibration (%dx%d); scaling K%s",
                        self.source, width, height, cam.width, cam.height,
                        " (aspect ratio differs too: check the calibration matches this camera)" if aspect else "")
        return cam.scaled(width, height)

    def _sample(self, image: np.ndarray, index: int, name: str) -> Sample:
        cam = self.camera_for(image.shape[1], image.shape[0])
        return Sample(images=[image], cameras=[cam], timestamp=index / self.fps, frame_id=f"{name}#{index}",
                      extras={"source": self.source, "frame_index": index})

    def __iter__(self) -> Iterator[Sample]:
        emitted = 0
        if self.kind == "images":
            for i in range(0, len(self.files), self.stride):
                if self.max_frames is not None and emitted >= self.max_frames:
                    return
                yield self._sample(read_image(self.files[i]), i, Path(self.files[i]).name)
                emitted += 1
            return
        cap = cv2.VideoCapture(self.source)
        if not cap.isOpened():
            raise DataError(f"{self.source}: cannot open video (corrupt or unsupported format)")
        try:
            i = 0
            while self.max_frames is None or emitted < self.max_frames:
                ok, frame = cap.read()
                if not ok:
                    if self.frame_count > 0 and i < self.frame_count - 1:
                        log.warning("%s: decoding stopped at frame %d of %d (truncated or corrupt video)",
                                    self.source, i, self.frame_count)
                    return
                if i % self.stride == 0:
                    yield self._sample(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), i, Path(self.source).name)
                    emitted += 1
                i += 1
        finally:
            cap.release()
