"""Shared helpers of the dataset readers: robust image / point-cloud loading with errors that
name the file. ``DataError`` is for bad data files; calibration problems raise
:class:`perception.geometry.CalibrationError` (both are ``ValueError``)."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np

log = logging.getLogger(__name__)

__all__ = ["DataError", "class_index", "read_image", "read_points", "read_depth_png", "IMAGE_EXTENSIONS"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def class_index(dataset: str, name: str, classes: tuple[str, ...] | None = None) -> int:
    """Index of a dataset class name in our class list, -1 when it is not one of ours
    (readers keep such boxes with label -1 so counts match the source; filter ``labels >= 0``)."""
    from perception.data.classes import CLASSES, CLASS_MAP, map_class

    if name not in CLASS_MAP.get(dataset, {}):
        return -1
    idx = map_class(dataset, name, classes or CLASSES)
    return -1 if idx is None else idx


class DataError(ValueError):
    """A data file (image, video, point cloud, label, table) is missing, truncated or malformed."""


def _check_complete(path: Path, data: bytes) -> None:
    """Catch truncated JPEG / PNG files: libjpeg decodes a truncated JPEG to a half-grey image
    with only a warning, so check the end-of-image markers ourselves."""
    head = data[:8]
    if head[:2] == b"\xff\xd8":  # JPEG: must end with EOI (allow trailing padding)
        if b"\xff\xd9" not in data[-64:]:
            raise DataError(f"{path}: truncated or corrupt JPEG (no end-of-image marker)")
    elif head == b"\x89PNG\r\n\x1a\n":
        if b"IEND" not in data[-32:]:
            raise DataError(f"{path}: truncated or corrupt PNG (no IEND chunk)")


def read_image(path: str | Path, *, rgb: bool = True, flags: int = cv2.IMREAD_COLOR) -> np.ndarray:
    """Read an image file as uint8 HxWx3 (RGB by default; BGR with ``rgb=False``).

    Raises :class:`DataError` naming the file when it is missing, empty, truncated or not
    decodable. ``flags=cv2.IMREAD_UNCHANGED`` keeps 16-bit PNGs (depth maps) as they are.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: image file not found")
    data = path.read_bytes()
    if not data:
        raise DataError(f"{path}: image file is empty")
    _check_complete(path, data)
    img = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    if img is None or img.size == 0:
        raise DataError(f"{path}: not a readable image (corrupt or unsupported format)")
    if img.ndim == 3 and img.shape[2] == 4 and flags == cv2.IMREAD_COLOR:
        img = img[:, :, :3]
    if rgb and img.ndim == 3 and img.shape[2] == 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    return img


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
