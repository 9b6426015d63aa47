"""Reading image files with errors that name the file.

Below every other subpackage because both the dataset readers (:mod:`perception.data.readers`)
and chessboard calibration (:mod:`perception.geometry.calibration`) read image files, and
geometry must not import data. ``perception.data.readers`` re-exports both names.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

__all__ = ["DataError", "read_image"]


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


def write_jpeg(path: str | Path, image: np.ndarray, quality: int = 92, *, rgb: bool = True) -> Path:
    """Encode ``image`` (RGB unless ``rgb=False``) as JPEG into ``path``; DataError if it cannot be encoded."""
    path = Path(path)
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if rgb else image,
                           [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise DataError(f"{path}: could not encode the image as JPEG")
    path.write_bytes(buf.tobytes())
    return path
