"""Intrinsic camera calibration from chessboard photos (OpenCV).

``cv2.findChessboardCorners`` (default flags) + ``cv2.cornerSubPix`` (11x11 window) +
``cv2.calibrateCamera`` (5-coefficient Brown-Conrady model, default flags). Images whose size
differs from the majority are skipped (a camera has one size; 1-pixel-off images such as the
Udacity ``calibration7/15.jpg`` at 1281x721 come from a different crop and would bias K).

The mounting (``T_ego_cam``) cannot come from a chessboard: :func:`calibrate_chessboard`
takes it as an argument (e.g. :func:`perception.geometry.camera_pose` of the assumed mount).
The pitch can be measured on a road image instead of assumed: :func:`pitch_from_horizon`.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np

from perception.geometry.camera import CalibrationError, Camera, Rig
from perception.geometry.transforms import camera_pose
from perception.utils.image_io import read_image

log = logging.getLogger(__name__)

__all__ = ["CalibrationResult", "calibrate_chessboard", "find_chessboard", "parse_pattern", "pitch_from_horizon"]

SUBPIX_CRITERIA = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 30, 1e-3)


@dataclass
class CalibrationResult:
    """Outcome of :func:`calibrate_chessboard`."""

    camera: Camera
    rms: float
    image_size: tuple[int, int]
    used: list[str]
    skipped: list[tuple[str, str]]  # (path, reason)
    per_image_rms: dict[str, float] = field(default_factory=dict)

    def rig(self, name: str | None = None) -> Rig:
        return Rig(name or self.camera.name, [self.camera])

    def save(self, path: str | Path) -> None:
        """Write a single-camera rig YAML (readable by :meth:`Rig.load`)."""
        self.rig().save(path)


def pitch_from_horizon(K: np.ndarray, horizon_row: float) -> float:
    """Downward pitch (degrees; negative = up) of a camera with no roll from the image row of the
    horizon, e.g. the vanishing point of straight lane lines on a level road (undistorted pixels).

    A level camera sees the horizon at the principal point's row ``cy``; a camera pitched down by
    ``p`` sees it ``fy * tan(p)`` pixels higher. So a horizon *below* ``cy`` means the camera looks up.
    """
    K = np.asarray(K, dtype=np.float64)
    return float(np.degrees(np.arctan2(K[1, 2] - float(horizon_row), K[1, 1])))


def parse_pattern(pattern: str) -> tuple[int, int]:
    """``"9x6"`` -> (9, 6) inner corners (columns x rows)."""
    try:
        cols, rows = (int(v) for v in pattern.lower().split("x"))
    except ValueError:
        raise ValueError(f"pattern must look like 9x6 (inner corners), got {pattern!r}") from None
    if cols < 2 or rows < 2:
        raise ValueError(f"pattern needs at least 2x2 inner corners, got {pattern!r}")
    return cols, rows


def find_chessboard(gray: np.ndarray, pattern: tuple[int, int]) -> np.ndarray | None:
    """Sub-pixel inner corners ``[N, 1, 2]`` float32, or None when the board is not found."""
    found, corners = cv2.findChessboardCorners(gray, pattern, None)
    if not found:
        return None
    return cv2.cornerSubPix(gray, corners, (11, 11), (-1, -1), SUBPIX_CRITERIA)


def _board_points(pattern: tuple[int, int], square_size: float) -> np.ndarray:
    cols, rows = pattern
    obj = np.zeros((rows * cols, 3), np.float32)
    obj[:, :2] = np.mgrid[0:cols, 0:rows].T.reshape(-1, 2) * square_size
    return obj


def calibrate_chessboard(paths: Sequence[str | Path], pattern: tuple[int, int] = (9, 6), *,
                         square_size: float = 1.0, name: str = "camera",
                         T_ego_cam: np.ndarray | None = None,
                         progress: Callable[[str], None] | None = None) -> CalibrationResult:
    """Calibrate one camera from chessboard images.

    ``T_ego_cam`` defaults to a level, forward-looking camera 1.4 m above the ego origin.
    ``square_size`` only scales the (unused) board extrinsics; K and dist do not depend on it.
    ``progress`` is called once per image (after it was processed) with its path.
    Raises :class:`CalibrationError` when fewer than 3 usable images remain; unreadable files
    raise :class:`perception.utils.image_io.DataError` (also ``perception.data.readers.DataError``)
    naming the file.
    """
    paths = [str(p) for p in paths]
    if not paths:
        raise CalibrationError("no calibration images given")
    if square_size <= 0:
        raise ValueError(f"square size must be positive, got {square_size}")
    skipped: list[tuple[str, str]] = []
    found: dict[str, tuple[np.ndarray, tuple[int, int]]] = {}
    sizes: dict[str, tuple[int, int]] = {}
    for p in paths:
        gray = read_image(p, rgb=False, flags=cv2.IMREAD_GRAYSCALE)
        sizes[p] = (gray.shape[1], gray.shape[0])
        corners = find_chessboard(gray, pattern)
        if corners is None:
            skipped.append((p, f"board not found ({pattern[0]}x{pattern[1]} inner corners)"))
        else:
            found[p] = (corners, sizes[p])
        if progress is not None:
            progress(p)
    # the camera's size = the most common size over all readable images (ties: first seen)
    size = Counter(sizes[p] for p in paths).most_common(1)[0][0]
    used = []
    for p in paths:
        if p in found and found[p][1] != size:
            w, h = found[p][1]
            skipped.append((p, f"image size {w}x{h} differs from the majority {size[0]}x{size[1]}"))
        elif p in found:
            used.append(p)
    skipped.sort(key=lambda item: paths.index(item[0]))
    if len(used) < 3:
        raise CalibrationError(f"only {len(used)} usable chessboard image(s) of {len(paths)} "
                               f"(need at least 3); skipped: " + "; ".join(f"{Path(p).name}: {r}" for p, r in skipped))
    obj = _board_points(pattern, square_size)
    obj_pts = [obj] * len(used)
    img_pts = [found[p][0] for p in used]
    rms, K, dist, rvecs, tvecs = cv2.calibrateCamera(obj_pts, img_pts, size, None, None)
    per_image = {}
    for p, ip, rv, tv in zip(used, img_pts, rvecs, tvecs):
        proj, _ = cv2.projectPoints(obj, rv, tv, K, dist)
        per_image[p] = float(np.sqrt(np.mean(np.sum((proj.reshape(-1, 2) - ip.reshape(-1, 2)) ** 2, 1))))
    log.info("calibrated %s from %d/%d images: RMS %.3f px", name, len(used), len(paths), rms)
    if T_ego_cam is None:  # assumed mount: forward-looking, 1.4 m above the ground, level
        T_ego_cam = camera_pose(0.0, 0.0, 1.4, 0.0)
    cam = Camera(name=name, width=size[0], height=size[1], K=K, dist=np.asarray(dist).reshape(-1)[:5],
                 T_ego_cam=T_ego_cam)
    return CalibrationResult(camera=cam, rms=float(rms), image_size=size, used=used, skipped=skipped,
                             per_image_rms=per_image)
