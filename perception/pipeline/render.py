"""Rendering: camera mosaic (boxes with class, distance, track id; depth inset), BEV panel
(ground texture, occupancy, range rings every 10 m, ego car, tracks with velocity, stale
sectors) and a status bar with FPS and per-stage latency. Output is a BGR image."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from perception.geometry.ipm import BEVSpec

__all__ = ["RenderConfig", "Renderer", "colorize_depth", "render_bev", "CLASS_COLORS"]

CLASS_COLORS = {  # BGR
    "car": (60, 200, 255), "truck": (60, 120, 255), "bus": (200, 80, 255),
    "pedestrian": (80, 255, 80), "cyclist": (255, 200, 60),
}
FONT = cv2.FONT_HERSHEY_SIMPLEX


@dataclass
class RenderConfig:
    layout: list[list[str]] | None = None    # rows of camera names; None: up to 3 per row in rig order
    tile_width: int = 352
    depth_inset: bool = True
    bev_size: int = 0                        # BEV panel side in pixels; 0: the mosaic height (min 360)
    ring_step: float = 10.0

    @classmethod
    def from_dict(cls, d: dict | None) -> "RenderConfig":
        d = dict(d or {})
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"display config: unknown field(s) {', '.join(sorted(unknown))}")
        return cls(**d)


def colorize_depth(depth: np.ndarray, near: float = 1.0, far: float = 80.0) -> np.ndarray:
    """Inverse-depth colour map (near = warm), BGR uint8."""
    inv = (1.0 / np.clip(depth, near, far) - 1.0 / far) / (1.0 / near - 1.0 / far)
    return cv2.applyColorMap((np.sqrt(inv) * 255).astype(np.uint8), cv2.COLORMAP_TURBO)


def _text(img: np.ndarray, s: str, org: tuple[int, int], scale: float = 0.45, color=(255, 255, 255),
          bg: tuple | None = (0, 0, 0)) -> None:
    (w, h), base = cv2.getTextSize(s, FONT, scale, 1)
    x, y = org
    if bg is not None:
        cv2.rectangle(img, (x - 1, y - h - 2), (x + w + 1, y + base - 1), bg, -1)
    cv2.putText(img, s, (x, y), FONT, scale, color, 1, cv2.LINE_AA)


def _box_corners_xy(center: np.ndarray, size: np.ndarray, yaw: float) -> np.ndarray:
    l, w = float(size[0]), float(size[1])
    c, s = math.cos(yaw), math.sin(yaw)
    local = np.array([[l / 2, w / 2], [l / 2, -w / 2], [-l / 2, -w / 2], [-l / 2, w / 2]])
    return local @ np.array([[c, s], [-s, c]]) + np.asarray(center[:2])


def render_bev(spec: BEVSpec, ground: np.ndarray | None, occupancy: np.ndarray | None, stale: np.ndarray | None,
               tracks: list, ring_step: float = 10.0) -> np.ndarray:
    """The BEV panel at BEV resolution (BGR)."""
    h, w = spec.shape
    if ground is not None:
        img = (cv2.cvtColor(ground, cv2.COLOR_RGB2BGR).astype(np.float32) * 0.7).astype(np.uint8)
    else:
        img = np.full((h, w, 3), 30, np.uint8)
    if occupancy is not None:
        free, occ = occupancy == 1, occupancy == 2
        img[free] = (img[free] * 0.6 + np.array([40, 110, 40]) * 0.4).astype(np.uint8)
        img[occ] = (img[occ] * 0.3 + np.array([40, 40, 230]) * 0.7).astype(np.uint8)
    if stale is not None and stale.any():
        hatch = np.zeros((h, w), bool)
        yy, xx = np.mgrid[0:h, 0:w]
        hatch[((xx + yy) // 4) % 4 == 0] = True
        m = stale & hatch
        img[stale] = (img[stale] * 0.5 + 40).astype(np.uint8)
        img[m] = (120, 120, 120)
    ego = spec.ego_to_pixel(np.zeros((1, 2)))[0]
    ex, ey = int(round(ego[0])), int(round(ego[1]))
    max_r = max(abs(spec.x_range[0]), abs(spec.x_range[1]), abs(spec.y_range[0]), abs(spec.y_range[1])) * 1.5
    r = ring_step
    while r <= max_r:
        rad = int(round(r / spec.resolution))
        cv2.circle(img, (ex, ey), rad, (90, 90, 90), 1, cv2.LINE_AA)
        _text(img, f"{r:.0f}m", (ex + 3, ey - rad + 12), 0.35, (170, 170, 170), None)
        r += ring_step
    # ego car: 4.6 x 1.9 m, rear axle at the origin
    car = spec.ego_to_pixel(_box_corners_xy(np.array([1.4, 0.0]), np.array([4.6, 1.9]), 0.0))
    cv2.fillPoly(img, [np.round(car).astype(np.int32)], (255, 255, 255))
    nose = spec.ego_to_pixel(np.array([[3.7, 0.0]]))[0]
    cv2.circle(img, (int(nose[0]), int(nose[1])), 2, (0, 0, 255), -1)
    for t in tracks:
        color = CLASS_COLORS.get(t.label, (255, 255, 255))
        pts = spec.ego_to_pixel(_box_corners_xy(t.center, t.size, t.yaw))
        cv2.polylines(img, [np.round(pts).astype(np.int32)], True, color, 2, cv2.LINE_AA)
        c = spec.ego_to_pixel(t.center[None, :2])[0]
        v = spec.ego_to_pixel((t.center[:2] + t.velocity)[None])[0]
        if np.hypot(*(v - c)) > 2:
            cv2.arrowedLine(img, (int(c[0]), int(c[1])), (int(v[0]), int(v[1])), color, 1, cv2.LINE_AA, tipLength=0.3)
        _text(img, f"#{t.id}", (int(c[0]) + 6, int(c[1]) - 4), 0.4, color, None)
    return img


@dataclass
class Renderer:
    """The composite frame: status bar on top, camera mosaic left, BEV panel right."""

    names: list[str]
    camera_size: tuple[int, int]                     # (width, height) of the camera tiles' aspect
    config: RenderConfig = field(default_factory=RenderConfig)
    name: str = "render"
    essential = False   # a failed rendering loses the picture of a frame, not its JSONL line (engine)

    def __post_init__(self) -> None:
        layout = self.config.layout
        if layout:
            missing = [n for row in layout for n in row if n not in self.names]
            if missing:
                raise ValueError(f"display layout names unknown camera(s) {missing}; rig has {self.names}")
            self.layout = [list(r) for r in layout]
        else:
            cols = min(3, len(self.names))
            self.layout = [self.names[i:i + cols] for i in range(0, len(self.names), cols)]
        self.cols = max(len(r) for r in self.layout)
        w, h = self.camera_size
        self.tile_w = int(self.config.tile_width if len(self.names) > 1 else max(self.config.tile_width, 640))
        self.tile_h = int(round(self.tile_w * h / w))
        self.mosaic_h = self.tile_h * len(self.layout)
        self.bev_size = self.config.bev_size or max(self.mosaic_h, 360)
        self.bar_h = 22

    def _tile(self, frame, i: int, track_of: dict[int, int]) -> np.ndarray:
        img = frame.images[i]
        tw, th = self.tile_w, self.tile_h
        if img is None:
            tile = np.full((th, tw, 3), 40, np.uint8)
            _text(tile, f"{frame.names[i]}: NO SIGNAL (stale)", (8, th // 2), 0.55, (0, 0, 255))
            return tile
        interp = cv2.INTER_AREA if img.shape[1] > 2 * tw else cv2.INTER_LINEAR
        tile = cv2.cvtColor(cv2.resize(img, (tw, th), interpolation=interp), cv2.COLOR_RGB2BGR)
        plan = frame.resizes[i]
        sx, sy = tw / img.shape[1], th / img.shape[0]
        for obj in frame.objects:
            if obj.camera != frame.names[i]:
                continue
            x1, y1, x2, y2 = plan.to_source(obj.box)[0]
            p1, p2 = (int(x1 * sx), int(y1 * sy)), (int(x2 * sx), int(y2 * sy))
            color = CLASS_COLORS.get(obj.label, (255, 255, 255))
            cv2.rectangle(tile, p1, p2, color, 2)
            tid = track_of.get(id(obj), 0)
            _text(tile, f"{obj.label} {obj.depth:.1f}m" + (f" #{tid}" if tid else ""), (p1[0], max(12, p1[1] - 3)),
                  0.4, (0, 0, 0), color)
        if self.config.depth_inset and frame.depth and frame.depth[i] is not None:
            iw, ih = tw // 5, th // 5
            inset = colorize_depth(cv2.resize(frame.depth[i], (iw, ih), interpolation=cv2.INTER_NEAREST))
            tile[th - ih - 2:th - 2, tw - iw - 2:tw - 2] = inset
            cv2.rectangle(tile, (tw - iw - 3, th - ih - 3), (tw - 2, th - 2), (255, 255, 255), 1)
        if frame.valid and not frame.valid[i]:
            _text(tile, "INVALID OUTPUT", (8, th - 8), 0.5, (0, 0, 255))
        _text(tile, frame.names[i], (4, 14), 0.45)
        return tile

    def __call__(self, frame):
        track_of = {}
        for f in frame.fused:
            for part in f.parts:
                track_of[id(part)] = f.track_id
        rows = []
        for row in self.layout:
            tiles = [self._tile(frame, self.names.index(n), track_of) for n in row]
            tiles += [np.zeros((self.tile_h, self.tile_w, 3), np.uint8)] * (self.cols - len(row))
            rows.append(np.hstack(tiles))
        mosaic = np.vstack(rows)
        bev = frame.bev
        bev_img = render_bev(bev.spec, bev.ground, bev.occupancy, bev.stale, frame.tracks, self.config.ring_step) \
            if bev is not None else np.zeros((self.bev_size, self.bev_size, 3), np.uint8)
        frame.bev_image = bev_img
        panel = cv2.resize(bev_img, (self.bev_size, self.bev_size), interpolation=cv2.INTER_AREA)
        if bev is not None and bev.stale_cameras:
            _text(panel, "stale: " + ", ".join(bev.stale_cameras), (4, self.bev_size - 8), 0.42, (0, 0, 255))
        _text(panel, "BEV", (4, 14), 0.45)
        body_h = max(self.mosaic_h, self.bev_size)
        body = np.zeros((body_h, mosaic.shape[1] + self.bev_size, 3), np.uint8)
        body[:self.mosaic_h, :mosaic.shape[1]] = mosaic
        body[:self.bev_size, mosaic.shape[1]:] = panel
        bar = np.full((self.bar_h, body.shape[1], 3), 25, np.uint8)
        stats = frame.stats or {}
        lat = stats.get("latency_ms", {})
        parts = " ".join(f"{k} {v:.0f}" for k, v in lat.items() if k not in ("sync", "total"))
        _text(bar, f"frame {frame.index}  {stats.get('fps', 0.0):.1f} fps  latency ms: {parts}  "
                   f"objects {len(frame.tracks)}", (6, 16), 0.45, (255, 255, 255), None)
        frame.canvas = np.vstack([bar, body])
        return frame
