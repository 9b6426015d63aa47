"""Shared helpers of the dataset readers: robust image / point-cloud loading with errors that
name the file. ``DataError`` is for bad data files (it and :func:`read_image` live in
:mod:`perception.utils.image_io`, where geometry may use them too); calibration problems raise
:class:`perception.geometry.CalibrationError` (both are ``ValueError``)."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np

from perception.utils.image_io import DataError, read_image
from perception.utils.video_io import IMAGE_EXTENSIONS

log = logging.getLogger(__name__)

__all__ = ["DataError", "class_index", "read_image", "read_points", "read_depth_png", "IMAGE_EXTENSIONS"]



def class_index(dataset: str, name: str, classes: tuple[str, ...] | None = None) -> int:
    """Index of a dataset class name in our class list, -1 when it is not one of ours
    (readers keep such boxes with label -1 so counts match the source; filter ``labels >= 0``)."""
    from perception.data.classes import CLASSES, CLASS_MAP, map_class

    if name not in CLASS_MAP.get(dataset, {}):
        return -1
    idx = map_class(dataset, name, classes or CLASSES)
    return -1 if idx is None else idx


def read_points(path: str | Path, num_features: int, dtype: type = np.float32) -> np.ndarray:
    """Read a raw little-endian point cloud (KITTI ``.bin``, nuScenes ``.pcd.bin``) as ``[N, C]``.

    Raises :class:`DataError` when the file size is not a multiple of ``C`` values or the
    values are not finite (a truncated or wrong-format file).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: point cloud file not found")
    itemsize = np.dtype(dtype).itemsize
    size = path.stat().st_size
    if size == 0 or size % (itemsize * num_features):
        raise DataError(f"{path}: point cloud size {size} bytes is not a multiple of {num_features} "
                        f"x {np.dtype(dtype).name} values (truncated or wrong format)")
    pts = np.fromfile(path, dtype=np.dtype(dtype).newbyteorder("<")).reshape(-1, num_features)
    if not np.all(np.isfinite(pts[:, :3])):
        raise DataError(f"{path}: point cloud contains NaN/Inf coordinates (corrupt)")
    return pts.astype(dtype, copy=False)


def read_depth_png(path: str | Path, scale: float = 256.0) -> np.ndarray:
    """KITTI depth map: uint16 PNG, ``depth = value / scale`` metres, 0 = invalid -> float32 [H, W]."""
    path = Path(path)
    img = read_image(path, rgb=False, flags=cv2.IMREAD_UNCHANGED)
    if img.ndim != 2 or img.dtype != np.uint16:
        raise DataError(f"{path}: expected a single-channel uint16 depth PNG, got {img.dtype} with shape {img.shape}")
    return img.astype(np.float32) / np.float32(scale)
