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

The same lines give the camera's height (:func:`camera_height_from_lanes`): once the pitch is
known, the ego lane's apparent width at a given row fixes the scale, given the lane's real
width (3.5 m between the inner edges of the lines by default).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass, field
from typing import Iterable

import cv2
import numpy as np

from perception.geometry.calibration import pitch_from_horizon
from perception.geometry.camera import Camera
from perception.geometry.ipm import image_to_ground
from perception.geometry.transforms import camera_pose

log = logging.getLogger(__name__)

__all__ = ["HorizonEstimate", "HeightEstimate", "LaneObservation", "estimate_horizon_row", "horizon_row_in_image",
           "lane_observation", "camera_height_from_lanes", "DEFAULT_LANE_WIDTH_M"]

MIN_ANGLE_DEG, MAX_ANGLE_DEG = 20.0, 70.0
DEFAULT_LANE_WIDTH_M = 3.5   # between the inner edges of the lines: 3.5-3.75 m lanes less ~0.15 m of paint


@dataclass
class LaneObservation:
    """Lane lines of one undistorted image: their vanishing point and, at ``ref_row`` (the bottom
    of the road band), the inner edges of the ego lane's left and right lines (None: not seen)."""

    row: float
    col: float
    ref_row: float
    left_x: float | None
    right_x: float | None


@dataclass
class HorizonEstimate:
    row: float            # undistorted pixel row at the camera's resolution
    images_used: int      # images with at least one left/right pair of lane segments
    images_seen: int
    spread: float         # interquartile range of the per-image rows (px): how much to trust it
    observations: list[LaneObservation] = field(default_factory=list, repr=False)


@dataclass
class HeightEstimate:
    height: float         # metres above the road
    images_used: int      # images where both ego-lane lines were seen
    spread: float         # interquartile range of the per-image heights (m)


def _weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    order = np.argsort(values)
    cum = np.cumsum(weights[order])
    return float(values[order][np.searchsorted(cum, cum[-1] / 2)])


def lane_observation(image: np.ndarray, roi: tuple[float, float] = (0.5, 0.92)) -> LaneObservation | None:
    """The lane lines of one image (None: no left/right pair found).

    ``image``: an undistorted RGB (the project's convention) or grey frame; ``roi``: the band of
    rows (fractions of the height) searched for lane segments: the road below the horizon and
    above the bonnet. The ego lane's lines are the left- and right-leaning lines through the
    vanishing point (within 2 % of the width) nearest the image centre at the bottom of the band:
    the inner edges of the painted lines.
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
    row, col = _weighted_median(y[ok], wgt[ok]), _weighted_median(x[ok], wgt[ok])
    # the ego lane: lines through the vanishing point, nearest the centre at the band's bottom
    through_vp = np.abs((row - c) / np.where(m == 0, 1e-9, m) - col) < 0.02 * w
    x_ref = (r1 - c) / np.where(m == 0, 1e-9, m)
    lx = x_ref[left & through_vp & (x_ref < w / 2)]
    rx = x_ref[right & through_vp & (x_ref > w / 2)]
    return LaneObservation(row, col, float(r1), float(lx.max()) if lx.size else None,
                           float(rx.min()) if rx.size else None)


def horizon_row_in_image(image: np.ndarray, roi: tuple[float, float] = (0.5, 0.92)) -> float | None:
    """Row where the image's lane-line segments meet (None: no left/right pair found); see
    :func:`lane_observation`."""
    obs = lane_observation(image, roi)
    return None if obs is None else obs.row


def estimate_horizon_row(images: Iterable[np.ndarray], camera: Camera | None = None) -> HorizonEstimate:
    """Median lane vanishing row over ``images`` (frames of one camera).

    With ``camera`` the frames are undistorted first and the row is returned at the camera's
    resolution (frames of another size are resized to it). Raises ``ValueError`` when no image
    shows a usable pair of lane lines. The per-image observations are kept for
    :func:`camera_height_from_lanes`.
    """
    obs: list[LaneObservation] = []
    seen = 0
    for image in images:
        seen += 1
        if camera is not None:
            if (image.shape[1], image.shape[0]) != camera.size:
                image = cv2.resize(image, camera.size, interpolation=cv2.INTER_AREA)
            image = camera.undistort(image)
        o = lane_observation(image)
        if o is not None:
            obs.append(o)
    if not obs:
        raise ValueError(f"no lane lines found in {seen} image(s): the horizon needs road footage with "
                         "visible lane markings (set the pitch with `perception calibrate --pitch-deg` or `--horizon-row` instead)")
    arr = np.asarray([o.row for o in obs])
    q25, q50, q75 = np.percentile(arr, [25, 50, 75])
    log.info("horizon row %.1f px from %d of %d images (IQR %.1f px)", q50, len(obs), seen, q75 - q25)
    return HorizonEstimate(row=float(q50), images_used=len(obs), images_seen=seen, spread=float(q75 - q25),
                           observations=obs)


def camera_height_from_lanes(camera: Camera, observations: Iterable[LaneObservation],
                             lane_width_m: float = DEFAULT_LANE_WIDTH_M,
                             pitch_deg: float | None = None) -> HeightEstimate | None:
    """Height of ``camera`` above the road from the apparent width of the ego lane.

    The camera's pitch is ``pitch_deg`` (degrees down, e.g. from :func:`estimate_horizon_row`
    and :func:`~perception.geometry.calibration.pitch_from_horizon`), else the one in its
    ``T_ego_cam``; its own height does not matter. Where the ray through each inner line edge at ``ref_row``
    meets the road scales with the camera height, so the height that makes the two points
    ``lane_width_m`` apart is the camera's height times ``lane_width_m`` over their distance. The
    focal length cancels out (to first order in the pitch). None when no image shows both lines.
    ``lane_width_m``: between the *inner* edges of the lines, e.g. a 3.66 m US highway lane with
    15 cm lines: 3.5 m.
    """
    if pitch_deg is not None:     # level mount at 1 m with that pitch
        camera = dataclasses.replace(camera, T_ego_cam=camera_pose(0.0, 0.0, 1.0, 0.0, pitch=math.radians(pitch_deg)))
    heights = []
    h0 = float(camera.T_ego_cam[2, 3])
    for o in observations:
        if o.left_x is None or o.right_x is None or o.right_x - o.left_x < 4:
            continue
        xy = image_to_ground(camera, np.array([[o.left_x, o.ref_row], [o.right_x, o.ref_row]]),
                             apply_distortion=False)
        if not np.isfinite(xy).all():
            continue
        d = float(np.linalg.norm(xy[0] - xy[1]))
        if d > 0:
            heights.append(h0 * lane_width_m / d)
    if not heights:
        return None
    q25, q50, q75 = np.percentile(heights, [25, 50, 75])
    log.info("camera height %.2f m from the ego lane (%.2f m wide) in %d images (IQR %.2f m)", q50, lane_width_m,
             len(heights), q75 - q25)
    return HeightEstimate(height=float(q50), images_used=len(heights), spread=float(q75 - q25))


AUTO_PITCH_MAX_DEG = 8.0            # a forward dashcam tilted more than this is more likely a bad estimate
AUTO_HEIGHT_RANGE_M = (0.8, 3.5)    # a car's dashcam to a truck's


@dataclass
class LaneMount:
    """Mount of an uncalibrated camera measured on its lane lines (``height_m`` None: not measured)."""

    pitch_deg: float                 # down; negative = up
    height_m: float | None
    horizon_row: float
    frames_used: int
    frames_seen: int


def estimate_mount(images: Iterable[np.ndarray], camera: Camera, max_spread_frac: float = 0.04,
                   lane_width_m: float | None = None) -> LaneMount | None:
    """Pitch and height of an uncalibrated forward ``camera`` from the lane lines in ``images``
    (frames spread over a drive): the pitch from the lines' vanishing point, then the height
    from the ego lane's apparent width (``lane_width_m`` between the inner edges of the lines;
    default 3.5 m).

    Returns None, with the reason logged, when the pitch is not trustworthy: lane pairs in
    fewer than 3 frames or in under 20 % of them, per-frame rows spread (IQR) over
    ``max_spread_frac`` of the image height, or a tilt beyond ``AUTO_PITCH_MAX_DEG``. The height
    is left None (the caller keeps its assumption) when fewer than 3 frames show both lines, the
    per-frame heights spread over 25 %, or it falls outside ``AUTO_HEIGHT_RANGE_M``. Why: a
    level camera puts the horizon at the image centre; a dashcam tilted by 2 degrees moves it
    by 40 px at 1280x720 and a car 20 m ahead by about 4 m in the ground-plane distance, and
    ground distances scale with the assumed height (1.4 m for a car's dashcam, 2.5 m in a truck).
    """
    try:
        est = estimate_horizon_row(images, camera)
    except ValueError as exc:
        log.info("auto mount: %s", exc)
        return None
    pitch = pitch_from_horizon(camera.K, est.row)
    why = None
    if est.images_used < 3 or est.images_used < 0.2 * est.images_seen:
        why = f"lane lines in only {est.images_used} of {est.images_seen} frames"
    elif est.spread > max_spread_frac * camera.height:
        why = f"the per-frame horizon rows spread over {est.spread:.0f} px (IQR)"
    elif abs(pitch) > AUTO_PITCH_MAX_DEG:
        why = f"the pitch estimate ({pitch:+.1f} deg) is beyond +-{AUTO_PITCH_MAX_DEG:.0f} deg"
    if why is not None:
        log.info("auto mount: not used, %s; keeping the camera level", why)
        return None
    log.info("auto mount: pitch %.2f deg %s (horizon row %.0f of %d, lane lines in %d of %d frames, IQR %.1f px)",
             abs(pitch), "down" if pitch >= 0 else "up", est.row, camera.height, est.images_used,
             est.images_seen, est.spread)
    width = DEFAULT_LANE_WIDTH_M if lane_width_m is None else lane_width_m
    h = camera_height_from_lanes(camera, est.observations, width, pitch_deg=pitch)
    height = None
    if h is None or h.images_used < 3:
        log.info("auto mount: height not measured (both ego-lane lines in %d frames)", 0 if h is None else h.images_used)
    elif h.spread > 0.25 * h.height or not AUTO_HEIGHT_RANGE_M[0] <= h.height <= AUTO_HEIGHT_RANGE_M[1]:
        log.info("auto mount: height estimate %.2f m (IQR %.2f m) not used", h.height, h.spread)
    else:
        height = h.height
        log.info("auto mount: height %.2f m from a %.2f m lane in %d frames (IQR %.2f m)", height, width,
                 h.images_used, h.spread)
    return LaneMount(pitch, height, est.row, est.images_used, est.images_seen)
