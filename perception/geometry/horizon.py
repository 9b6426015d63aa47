"""The horizon row of a forward camera from lane lines: the camera's pitch without a target.

A chessboard gives the intrinsics but not how the camera is mounted. On a straight, level road
the lane lines are parallel on the ground, so in an undistorted image they meet at the
vanishing point of the road direction, which lies on the horizon. Its row gives the pitch
(:func:`perception.geometry.calibration.pitch_from_horizon`).

Per image: Canny edges in the road part of the frame (lower half, above the bonnet), probabilistic
Hough segments, left-leaning and right-leaning segments at 20-70 degrees from horizontal, and the
length-weighted median row of the intersections of every left/right pair that meet inside the
image's width. Over a clip, the median of the per-image rows: curves, hills and lane changes move
single frames, not the median. Straight highway footage works best.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Iterable

import cv2
import numpy as np

from perception.geometry.camera import Camera

log = logging.getLogger(__name__)

__all__ = ["HorizonEstimate", "estimate_horizon_row", "horizon_row_in_image"]

MIN_ANGLE_DEG, MAX_ANGLE_DEG = 20.0, 70.0


@dataclass
class HorizonEstimate:
    row: float            # undistorted pixel row at the camera's resolution
    images_used: int      # images with at least one left/right pair of lane segments
    images_seen: int
    spread: float         # interquartile range of the per-image rows (px): how much to trust it


def _weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    order = np.argsort(values)
    cum = np.cumsum(weights[order])
    return float(values[order][np.searchsorted(cum, cum[-1] / 2)])


def horizon_row_in_image(image: np.ndarray, roi: tuple[float, float] = (0.5, 0.92)) -> float | None:
    """Row where the image's lane-line segments meet (None: no left/right pair found).

    ``image``: an undistorted RGB (the project's convention) or grey frame; ``roi``: the band of
    rows (fractions of the height) searched for lane segments: the road below the horizon and
    above the bonnet.
    """
    gray = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    h, w = gray.shape
    r0, r1 = int(roi[0] * h), int(roi[1] * h)
    edges = cv2.Canny(cv2.GaussianBlur(gray, (5, 5), 0), 50, 150)
    edges[:r0] = 0
    edges[r1:] = 0
    segs = cv2.HoughLinesP(edges, 1, np.pi / 180, threshold=max(20, h // 30), minLineLength=h * 0.06,
                           maxLineGap=h * 0.02)
    if segs is None:
        return None
    segs = segs.reshape(-1, 4).astype(np.float64)
    dx, dy = segs[:, 2] - segs[:, 0], segs[:, 3] - segs[:, 1]
    angle = np.degrees(np.arctan2(np.abs(dy), np.abs(dx)))
    keep = (angle >= MIN_ANGLE_DEG) & (angle <= MAX_ANGLE_DEG)
    slope = dy / np.where(dx == 0, 1e-9, dx)      # vertical segments are dropped by the angle test
    length = np.hypot(dx, dy)
    left = keep & (slope < 0)     # rises to the right: the left lane line
    right = keep & (slope > 0)
    if not left.any() or not right.any():
        return None
    # each segment as a line y = m x + c; intersect every left/right pair
    m = slope
    c = segs[:, 1] - m * segs[:, 0]
    li, ri = np.nonzero(left)[0], np.nonzero(right)[0]
    ml, mr = m[li][:, None], m[ri][None, :]
    cl, cr = c[li][:, None], c[ri][None, :]
    x = (cr - cl) / (ml - mr)
    y = ml * x + cl
    wgt = length[li][:, None] * length[ri][None, :]
    ok = (x >= 0) & (x < w) & (y < r1)
    if not ok.any():
        return None
    return _weighted_median(y[ok], wgt[ok])


def estimate_horizon_row(images: Iterable[np.ndarray], camera: Camera | None = None) -> HorizonEstimate:
    """Median lane vanishing row over ``images`` (frames of one camera).

    With ``camera`` the frames are undistorted first and the row is returned at the camera's
    resolution (frames of another size are resized to it). Raises ``ValueError`` when no image
    shows a usable pair of lane lines.
    """
    rows: list[float] = []
    seen = 0
    for image in images:
        seen += 1
        if camera is not None:
            if (image.shape[1], image.shape[0]) != camera.size:
                image = cv2.resize(image, camera.size, interpolation=cv2.INTER_AREA)
            image = camera.undistort(image)
        row = horizon_row_in_image(image)
        if row is not None:
            rows.append(row)
    if not rows:
        raise ValueError(f"no lane lines found in {seen} image(s): the horizon needs road footage with "
                         "visible lane markings (or give the pitch with --pitch-deg / --horizon-row)")
    arr = np.asarray(rows)
    q25, q50, q75 = np.percentile(arr, [25, 50, 75])
    log.info("horizon row %.1f px from %d of %d images (IQR %.1f px)", q50, len(rows), seen, q75 - q25)
    return HorizonEstimate(row=float(q50), images_used=len(rows), images_seen=seen, spread=float(q75 - q25))
