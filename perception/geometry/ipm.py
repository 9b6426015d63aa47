"""Inverse perspective mapping (IPM): the ground plane ``z = 0`` of the ego frame <-> image.

Conventions (DESIGN.md section 2): ego x forward, y left, z up, origin on the ground under
the rear axle; camera frame OpenCV. The BEV image has up = forward (+x), left = left (+y),
the ego origin at a fixed pixel (:attr:`BEVSpec.ego_pixel`) and a fixed resolution in m/px.

Distortion is handled exactly: image -> ground undistorts pixels through the camera's model
(``cv2.undistortPointsIter`` inside :meth:`Camera.pixel_rays`); ground -> image and the BEV
warp go through ``cv2.projectPoints`` with the distortion coefficients, so a BEV pixel samples
the *raw* (distorted) image directly with one ``cv2.remap`` call. The remap maps are computed
once per (camera, BEV spec) and cached, so warping a video is one ``cv2.remap`` per frame.

A polynomial distortion model is only valid inside the calibrated field of view: far outside
it the polynomial folds back and ground points behind the image border would wrongly land
inside the image. :func:`bev_remap_maps` therefore only accepts ground points whose
*undistorted* normalised coordinates lie inside the undistorted image border.

For a pinhole camera (no distortion) the mapping is a plain homography
(:func:`ground_to_image_homography`); :func:`bev_homography` gives the matrix that
``cv2.warpPerspective`` needs for the same BEV grid, which is what :func:`warp_to_bev`
computes when called with ``method="homography"``.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import cv2
import numpy as np

from perception.geometry.camera import Camera
from perception.geometry.transforms import transform_points

__all__ = [
    "BEVSpec", "ground_to_image_homography", "image_to_ground", "ground_to_image",
    "bev_homography", "bev_remap_maps", "warp_to_bev",
]


@dataclass(frozen=True)
class BEVSpec:
    """A metric BEV grid in the ego frame.

    ``x_range`` (back, front) and ``y_range`` (right, left) in metres, ``resolution`` in m/px.
    Row 0 is the far front edge (``x = x_range[1]``), column 0 the far left edge
    (``y = y_range[1]``); pixel centres are at half-pixel offsets.
    """

    x_range: tuple[float, float] = (-20.0, 60.0)
    y_range: tuple[float, float] = (-30.0, 30.0)
    resolution: float = 0.1

    def __post_init__(self) -> None:
        if self.resolution <= 0:
            raise ValueError(f"BEVSpec: resolution must be positive, got {self.resolution}")
        if self.x_range[1] <= self.x_range[0] or self.y_range[1] <= self.y_range[0]:
            raise ValueError(f"BEVSpec: empty range x={self.x_range} y={self.y_range}")

    @property
    def height(self) -> int:
        return int(round((self.x_range[1] - self.x_range[0]) / self.resolution))

    @property
    def width(self) -> int:
        return int(round((self.y_range[1] - self.y_range[0]) / self.resolution))

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width) of the BEV image in pixels."""
        return self.height, self.width

    @property
    def ego_pixel(self) -> tuple[float, float]:
        """(col, row) of the ego origin (continuous pixel coordinates, pixel centres at integers)."""
        col, row = self.ego_to_pixel(np.zeros((1, 2)))[0]
        return float(col), float(row)

    def ego_to_pixel(self, xy: np.ndarray) -> np.ndarray:
        """``[N, 2]`` ego (x, y) metres -> ``[N, 2]`` BEV (col, row) continuous pixels."""
        xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
        col = (self.y_range[1] - xy[:, 1]) / self.resolution - 0.5
        row = (self.x_range[1] - xy[:, 0]) / self.resolution - 0.5
        return np.stack([col, row], -1)

    def pixel_to_ego(self, colrow: np.ndarray) -> np.ndarray:
        """``[N, 2]`` BEV (col, row) pixels -> ``[N, 2]`` ego (x, y) metres."""
        cr = np.asarray(colrow, dtype=np.float64).reshape(-1, 2)
        x = self.x_range[1] - (cr[:, 1] + 0.5) * self.resolution
        y = self.y_range[1] - (cr[:, 0] + 0.5) * self.resolution
        return np.stack([x, y], -1)

    def affine_pixel_to_ego(self) -> np.ndarray:
        """3x3 matrix A with ``[x, y, 1] = A @ [col, row, 1]``."""
        r = self.resolution
        return np.array([[0.0, -r, self.x_range[1] - 0.5 * r],
                         [-r, 0.0, self.y_range[1] - 0.5 * r],
                         [0.0, 0.0, 1.0]])

    def grid(self) -> tuple[np.ndarray, np.ndarray]:
        """Ego x and y of every BEV pixel centre, each ``[H, W]`` float64."""
        rows = self.x_range[1] - (np.arange(self.height) + 0.5) * self.resolution
        cols = self.y_range[1] - (np.arange(self.width) + 0.5) * self.resolution
        return np.meshgrid(rows, cols, indexing="ij")


def ground_to_image_homography(camera: Camera) -> np.ndarray:
    """3x3 homography H with ``[u, v, 1] ~ H @ [x, y, 1]`` for ground points (ego z = 0).

    Pinhole part only: exact for undistorted images (``camera.undistort(img)``); for the raw
    image of a distorted camera use :func:`ground_to_image`. ``H = K [r1 r2 t]`` where
    ``[R | t] = T_cam_ego``.
    """
    T = camera.T_cam_ego
    H = camera.K @ np.column_stack([T[:3, 0], T[:3, 1], T[:3, 3]])
    return H / H[2, 2] if abs(H[2, 2]) > 1e-12 else H


def ground_to_image(camera: Camera, xy: np.ndarray, *, apply_distortion: bool = True) -> np.ndarray:
    """``[N, 2]`` ground points (ego x, y at z = 0) -> ``[N, 2]`` pixels of the (raw) image.

    Rows of points behind the camera (depth <= 0) are NaN. Pixels may lie outside the image.
    """
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    pts = np.c_[xy, np.zeros(len(xy))]
    uv, depth = camera.project(pts, apply_distortion=apply_distortion)
    uv = uv.copy()
    uv[~(depth > 1e-6)] = np.nan
    return uv


def image_to_ground(camera: Camera, uv: np.ndarray, *, apply_distortion: bool = True) -> np.ndarray:
    """``[N, 2]`` pixels -> ``[N, 2]`` ego (x, y) where the pixel's ray meets the ground z = 0.

    Pixels are undistorted first (exact inverse of the distortion model). Rows whose ray
    does not hit the ground in front of the camera (at or above the horizon) are NaN.
    """
    rays_cam = camera.pixel_rays(uv, apply_distortion=apply_distortion)
    T = camera.T_ego_cam
    dirs = rays_cam @ T[:3, :3].T
    origin = T[:3, 3]
    with np.errstate(divide="ignore", invalid="ignore"):
        s = -origin[2] / dirs[:, 2]
    ok = np.isfinite(s) & (s > 0)
    out = origin[:2] + s[:, None] * dirs[:, :2]
    out[~ok] = np.nan
    return out


def ground_depth(camera: Camera, uv: np.ndarray, *, apply_distortion: bool = True) -> np.ndarray:
    """``[N]`` camera z (m) of the ground point (ego z = 0) seen at each pixel of ``uv`` ``[N, 2]``;
    NaN at or above the horizon. With a calibrated mount, this is where a pixel on the road lies,
    and how far an object is whose bottom edge touches the road at that pixel."""
    uv = np.asarray(uv, dtype=np.float64).reshape(-1, 2)
    xy = image_to_ground(camera, uv, apply_distortion=apply_distortion)
    ok = np.isfinite(xy).all(axis=1)
    z = np.full(len(uv), np.nan)
    if ok.any():
        pts = np.c_[xy[ok], np.zeros(int(ok.sum())), np.ones(int(ok.sum()))]
        zc = (pts @ camera.T_cam_ego.T)[:, 2]
        z[ok] = np.where(zc > 0, zc, np.nan)
    return z


def bev_homography(camera: Camera, spec: BEVSpec) -> np.ndarray:
    """3x3 matrix mapping BEV pixels (col, row) to image pixels (pinhole part only).

    Use with ``cv2.warpPerspective(img, M, (spec.width, spec.height),
    flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)`` on an undistorted image.
    """
    return ground_to_image_homography(camera) @ spec.affine_pixel_to_ego()


def _undistorted_bounds(camera: Camera) -> tuple[float, float, float, float]:
    """Bounding box (x_min, x_max, y_min, y_max) of the normalised coordinates of the image
    border after undistortion: the region where the distortion polynomial is trusted."""
    w, h = camera.width, camera.height
    n = 64
    us, vs = np.linspace(-0.5, w - 0.5, n), np.linspace(-0.5, h - 0.5, n)
    border = np.concatenate([np.c_[us, np.full(n, -0.5)], np.c_[us, np.full(n, h - 0.5)],
                             np.c_[np.full(n, -0.5), vs], np.c_[np.full(n, w - 0.5), vs]])
    rays = camera.pixel_rays(border)
    return (float(rays[:, 0].min()), float(rays[:, 0].max()), float(rays[:, 1].min()), float(rays[:, 1].max()))


_MAP_CACHE: "OrderedDict[tuple, tuple[np.ndarray, np.ndarray, np.ndarray]]" = OrderedDict()
_MAP_CACHE_SIZE = 16


def _cache_key(camera: Camera, spec: BEVSpec, min_depth: float) -> tuple:
    return (camera.width, camera.height, camera.K.tobytes(), camera.dist.tobytes(),
            camera.T_ego_cam.tobytes(), spec, float(min_depth))


def bev_remap_maps(camera: Camera, spec: BEVSpec, *, min_depth: float = 0.5
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(map_x, map_y, valid)`` for ``cv2.remap``: for every BEV pixel the raw-image pixel
    that sees its ground point. ``valid`` [H, W] bool: the ground point is at least
    ``min_depth`` in front of the camera and inside its image. Cached per (camera, spec).
    Invalid pixels get map coordinates -1e4; :func:`warp_to_bev` zeroes them with ``valid``.
    """
    key = _cache_key(camera, spec, min_depth)
    hit = _MAP_CACHE.get(key)
    if hit is not None:
        _MAP_CACHE.move_to_end(key)
        return hit
    gx, gy = spec.grid()
    pts = np.stack([gx.ravel(), gy.ravel(), np.zeros(gx.size)], -1)
    pts_cam = transform_points(camera.T_cam_ego, pts)
    z = pts_cam[:, 2]
    valid = z > min_depth
    uv = np.full((len(pts), 2), -1e4)
    if valid.any():
        xn = pts_cam[valid, :2] / z[valid, None]
        if camera.has_distortion:
            x0, x1, y0, y1 = _undistorted_bounds(camera)
            inside = (xn[:, 0] >= x0) & (xn[:, 0] <= x1) & (xn[:, 1] >= y0) & (xn[:, 1] <= y1)
            idx = np.flatnonzero(valid)
            valid[idx[~inside]] = False
            xn = xn[inside]
        if len(xn):
            if camera.has_distortion:
                proj, _ = cv2.projectPoints(np.c_[xn, np.ones(len(xn))], np.zeros(3), np.zeros(3),
                                            camera.K, camera.dist)
                uv_valid = proj.reshape(-1, 2)
            else:
                uv_valid = xn @ camera.K[:2, :2].T + camera.K[:2, 2]
            uv[valid] = uv_valid
    inside_img = ((uv[:, 0] >= -0.5) & (uv[:, 0] <= camera.width - 0.5)
                  & (uv[:, 1] >= -0.5) & (uv[:, 1] <= camera.height - 0.5))
    valid &= inside_img
    uv[~valid] = -1e4
    h, w = spec.shape
    map_x = uv[:, 0].reshape(h, w).astype(np.float32)
    map_y = uv[:, 1].reshape(h, w).astype(np.float32)
    out = (map_x, map_y, valid.reshape(h, w))
    _MAP_CACHE[key] = out
    if len(_MAP_CACHE) > _MAP_CACHE_SIZE:
        _MAP_CACHE.popitem(last=False)
    return out


def warp_to_bev(image: np.ndarray, camera: Camera, bev_spec: BEVSpec, *, min_depth: float = 0.5,
                interpolation: int = cv2.INTER_LINEAR, method: str = "remap"
                ) -> tuple[np.ndarray, np.ndarray]:
    """Warp a raw camera image onto the ground-plane BEV grid.

    Returns ``(bev_image, valid)``: ``bev_image`` has the BEV shape (plus the image's
    channels), zeros where invalid; ``valid`` [H, W] bool marks BEV pixels whose ground
    point is in front of the camera and inside its image. Everything off the ground plane
    (cars, poles) is smeared, as with any IPM.

    ``method="remap"`` (default) samples the raw image through the distortion model with
    ``cv2.remap`` and cached maps. ``method="homography"`` undistorts the image first and uses
    ``cv2.warpPerspective`` with :func:`bev_homography` (slower for video, same result up to
    interpolation).
    """
    camera.check_image(image)
    map_x, map_y, valid = bev_remap_maps(camera, bev_spec, min_depth=min_depth)
    if method == "remap":
        bev = cv2.remap(image, map_x, map_y, interpolation, borderMode=cv2.BORDER_REPLICATE)
    elif method == "homography":
        M = bev_homography(camera, bev_spec)
        bev = cv2.warpPerspective(camera.undistort(image), M, (bev_spec.width, bev_spec.height),
                                  flags=interpolation | cv2.WARP_INVERSE_MAP,
                                  borderMode=cv2.BORDER_REPLICATE)
    else:
        raise ValueError(f"warp_to_bev: method must be 'remap' or 'homography', got {method!r}")
    bev[~valid] = 0
    return bev, valid
