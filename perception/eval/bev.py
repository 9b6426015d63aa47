"""Bird's-eye-view metrics: nuScenes-style centre-distance AP of objects, and occupancy IoU.

**Centre-distance AP** (nuScenes detection AP, Caesar et al. 2020): per class and distance
threshold (0.5, 1, 2, 4 m), predictions of all frames are sorted by score and matched
greedily to the closest not-yet-matched ground-truth object of the same class in the same
frame, by the 2D (ego x, y) distance of the centres; a match closer than the threshold is a
true positive. Precision is linearly interpolated at 101 recall points (0 beyond the largest
recall) and AP is the mean of ``max(precision - min_precision, 0)`` over the recall points
above ``min_recall``, normalised by ``1 - min_precision`` (nuScenes: both 0.1). ``center_map``
is the mean over classes and thresholds; classes without ground truth are left out.
Objects (predicted and ground truth) farther than the class range (nuScenes detection ranges:
50 m for vehicles, 40 m for pedestrians and cyclists) are removed first.

Predictions come per camera: each camera's ``center_cam`` is moved to the ego frame with
its ``T_ego_cam`` and duplicates seen by two cameras are merged (:func:`merge_objects`: same
class, different cameras, centres closer than ``merge_dist``, the higher score wins).

**Occupancy IoU**: points lifted from each camera's depth map to the ego frame; BEV cells
holding a point with ``z_min < z < z_max`` (0.3..3 m: above the ground, below the canopy) are
occupied, cells with only ground points are free. IoU of "occupied" between the prediction
and the ground-truth grid, counted over the cells the cameras actually see (cells that hold a
point lifted from the *ground-truth* depth, the camera visibility mask of Occ3D-style
benchmarks; hidden cells are not scored), and accumulated over frames as
sum(intersection) / sum(union).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from perception.geometry import Camera
from perception.geometry.transforms import transform_points

log = logging.getLogger(__name__)

__all__ = ["BevObjects", "DIST_THRESHOLDS", "CLASS_RANGE", "lift_to_ego", "merge_objects", "center_distance_ap",
           "OccupancyGrid", "lift_depth", "occupancy_from_points", "occupancy_iou", "BevEvaluator"]

DIST_THRESHOLDS = (0.5, 1.0, 2.0, 4.0)
CLASS_RANGE = {"car": 50.0, "truck": 50.0, "bus": 50.0, "pedestrian": 40.0, "cyclist": 40.0}


@dataclass
class BevObjects:
    """Objects of one frame in the ego frame: ``centers`` [N, 3] (or [N, 2]), ``labels`` [N],
    ``scores`` [N] (1 for ground truth)."""

    centers: np.ndarray
    labels: np.ndarray
    scores: np.ndarray | None = None
    cameras: np.ndarray | None = None   # [N] int: which camera saw it (for cross-camera merging)

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, np.int64).reshape(-1)
        n = len(self.labels)
        self.centers = np.asarray(self.centers, np.float64).reshape(n, -1) if n else np.zeros((0, 3))
        self.scores = (np.ones(n) if self.scores is None else np.asarray(self.scores, np.float64).reshape(-1))
        self.cameras = (np.zeros(n, np.int64) if self.cameras is None
                        else np.asarray(self.cameras, np.int64).reshape(-1))
        if len(self.scores) != n or len(self.cameras) != n:
            raise ValueError(f"BevObjects: {n} labels but {len(self.scores)} scores / {len(self.cameras)} cameras")

    @classmethod
    def concat(cls, parts: Sequence["BevObjects"]) -> "BevObjects":
        if not parts:
            return cls.empty()
        return cls(np.concatenate([p.centers.reshape(-1, 3) for p in parts]), np.concatenate([p.labels for p in parts]),
                   np.concatenate([p.scores for p in parts]), np.concatenate([p.cameras for p in parts]))

    def __len__(self) -> int:
        return len(self.labels)

    @classmethod
    def empty(cls) -> "BevObjects":
        return cls(np.zeros((0, 3)), np.zeros(0, np.int64), np.zeros(0))


def lift_to_ego(center_cam: np.ndarray, T_ego_cam: np.ndarray) -> np.ndarray:
    """Camera-frame centres [N, 3] -> ego frame [N, 3]."""
    return transform_points(np.asarray(T_ego_cam, np.float64), np.asarray(center_cam, np.float64).reshape(-1, 3))


def merge_objects(objects: BevObjects, merge_dist: float = 1.5) -> BevObjects:
    """Greedy cross-camera de-duplication: highest score first, drop an object when a kept
    object of the same class *from another camera* has its centre (x, y) within ``merge_dist``
    (within one camera NMS has already removed duplicates, and close pedestrians are real)."""
    n = len(objects)
    if n <= 1:
        return objects
    order = np.argsort(-objects.scores, kind="mergesort")
    xy = objects.centers[:, :2]
    keep: list[int] = []
    for i in order:
        if keep:
            k = np.asarray(keep)
            same = (objects.labels[k] == objects.labels[i]) & (objects.cameras[k] != objects.cameras[i])
            if (same & (np.linalg.norm(xy[k] - xy[i], axis=1) < merge_dist)).any():
                continue
        keep.append(int(i))
    k = np.asarray(keep)
    return BevObjects(objects.centers[k], objects.labels[k], objects.scores[k], objects.cameras[k])


def _calc_ap(rec: np.ndarray, prec: np.ndarray, min_recall: float, min_precision: float) -> float:
    """nuScenes ``accumulate`` + ``calc_ap``."""
    rec_pts = np.linspace(0, 1, 101)
    p = np.interp(rec_pts, rec, prec, right=0)
    p = p[int(round(100 * min_recall)) + 1:] if min_recall > 0 else p
    p = np.clip(p - min_precision, 0, None)
    return float(np.mean(p)) / (1.0 - min_precision)


def center_distance_ap(preds: Sequence[BevObjects], gts: Sequence[BevObjects], classes: Sequence[str],
                       thresholds: Sequence[float] = DIST_THRESHOLDS, *, min_recall: float = 0.1,
                       min_precision: float = 0.1, class_range: dict[str, float] | None = CLASS_RANGE
                       ) -> dict[str, dict[str, float]]:
    """AP per class name and threshold (``{"car": {"0.5": ap, ...}}``); NaN without ground truth.

    ``preds[i]`` and ``gts[i]`` are the objects of frame ``i``. ``class_range=None`` keeps all
    objects; ``min_recall = min_precision = 0`` gives plain 101-point AP.
    """
    if len(preds) != len(gts):
        raise ValueError(f"{len(preds)} prediction frames but {len(gts)} ground-truth frames")
    out: dict[str, dict[str, float]] = {}
    for c, name in enumerate(classes):
        rng = (class_range or {}).get(name, math.inf)

        def sel(o: BevObjects) -> np.ndarray:
            return (o.labels == c) & (np.linalg.norm(o.centers[:, :2], axis=1) <= rng)

        g_xy = [g.centers[sel(g), :2] for g in gts]
        npos = sum(len(x) for x in g_xy)
        p_frame, p_xy, p_score = [], [], []
        for f, p in enumerate(preds):
            m = sel(p)
            p_frame.append(np.full(int(m.sum()), f))
            p_xy.append(p.centers[m, :2])
            p_score.append(p.scores[m])
        frames = np.concatenate(p_frame) if p_frame else np.zeros(0, np.int64)
        xy = np.concatenate(p_xy) if p_xy else np.zeros((0, 2))
        scores = np.concatenate(p_score) if p_score else np.zeros(0)
        order = np.argsort(-scores, kind="stable")
        out[name] = {}
        for th in thresholds:
            key = f"{th:g}"
            if npos == 0:
                out[name][key] = float("nan")
                continue
            taken = [np.zeros(len(x), bool) for x in g_xy]
            tp = np.zeros(len(order))
            for r, i in enumerate(order):
                f = frames[i]
                if len(g_xy[f]) == 0:
                    continue
                d = np.linalg.norm(g_xy[f] - xy[i], axis=1)
                d[taken[f]] = np.inf
                j = int(np.argmin(d))
                if d[j] < th:
                    taken[f][j] = True
                    tp[r] = 1
            if len(order) == 0:
                out[name][key] = 0.0
                continue
            tps = np.cumsum(tp)
            fps = np.cumsum(1 - tp)
            out[name][key] = _calc_ap(tps / npos, tps / (tps + fps), min_recall, min_precision)
    return out


# ---------------------------------------------------------------------------- occupancy
@dataclass
class OccupancyGrid:
    """BEV raster like :class:`perception.data.synth.labels.BevGrid`: row 0 = farthest ahead,
    column 0 = farthest left, ego at the centre; cell (row, col) centre at ego
    ``x = (rows/2 - row - 0.5) * res``, ``y = (cols/2 - col - 0.5) * res``."""

    rows: int = 400
    cols: int = 400
    res: float = 0.25

    def cells(self, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(row, col, inside) of ego points [N, 2+]."""
        xy = np.asarray(xy, np.float64)
        row = np.floor(self.rows / 2 - xy[:, 0] / self.res).astype(np.int64)
        col = np.floor(self.cols / 2 - xy[:, 1] / self.res).astype(np.int64)
        inside = (row >= 0) & (row < self.rows) & (col >= 0) & (col < self.cols)
        return row, col, inside


def lift_depth(depth: np.ndarray, camera: Camera, stride: int = 1, max_depth: float = 80.0) -> np.ndarray:
    """Ego-frame points [N, 3] of the valid pixels of a z-depth map (``camera`` at the map's size)."""
    depth = np.asarray(depth, np.float64)
    if depth.shape != (camera.height, camera.width):
        raise ValueError(f"depth map is {depth.shape[1]}x{depth.shape[0]} but camera '{camera.name}' is "
                         f"{camera.width}x{camera.height}")
    v, u = np.mgrid[0:depth.shape[0]:stride, 0:depth.shape[1]:stride]
    z = depth[v, u]
    ok = np.isfinite(z) & (z > 0) & (z <= max_depth)
    if not ok.any():
        return np.zeros((0, 3))
    return camera.unproject(np.stack([u[ok], v[ok]], -1).astype(np.float64), z[ok])


def occupancy_from_points(points: np.ndarray, grid: OccupancyGrid, z_min: float = 0.3, z_max: float = 3.0
                          ) -> tuple[np.ndarray, np.ndarray]:
    """(occupied, observed) bool grids: cells with a point at ``z_min < z < z_max`` are occupied;
    cells with any point below ``z_max`` (ground or obstacle) are observed."""
    occ = np.zeros((grid.rows, grid.cols), bool)
    seen = np.zeros((grid.rows, grid.cols), bool)
    if len(points) == 0:
        return occ, seen
    row, col, inside = grid.cells(points)
    z = points[:, 2]
    low = inside & (z < z_max)
    seen[row[low], col[low]] = True
    hit = low & (z > z_min)
    occ[row[hit], col[hit]] = True
    return occ, seen


def occupancy_iou(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray | None = None) -> tuple[int, int]:
    """(intersection, union) cell counts of two occupied-cell grids inside ``mask``."""
    pred, gt = np.asarray(pred, bool), np.asarray(gt, bool)
    if pred.shape != gt.shape:
        raise ValueError(f"occupancy grids differ in shape: {pred.shape} vs {gt.shape}")
    if mask is not None:
        pred, gt = pred & mask, gt & mask
    return int((pred & gt).sum()), int((pred | gt).sum())


class BevEvaluator:
    """Accumulates BEV objects and occupancy grids; :meth:`compute` gives the ``bev`` block."""

    def __init__(self, classes: Sequence[str], thresholds: Sequence[float] = DIST_THRESHOLDS,
                 min_recall: float = 0.1, min_precision: float = 0.1,
                 class_range: dict[str, float] | None = CLASS_RANGE) -> None:
        self.classes = tuple(classes)
        self.thresholds = tuple(thresholds)
        self.min_recall, self.min_precision, self.class_range = min_recall, min_precision, class_range
        self.preds: list[BevObjects] = []
        self.gts: list[BevObjects] = []
        self.occ = [0, 0]
        self.occ_ref = [0, 0]
        self.occ_frames = 0

    def add_objects(self, pred: BevObjects, gt: BevObjects) -> None:
        self.preds.append(pred)
        self.gts.append(gt)

    def add_occupancy(self, pred_occ: np.ndarray, gt_occ: np.ndarray, visible: np.ndarray,
                      ref_occ: np.ndarray | None = None) -> float:
        """Add one frame; returns its IoU. ``ref_occ``: occupancy from the ground-truth depth (the
        upper bound a perfect depth map reaches with this lifting), reported alongside."""
        i, u = occupancy_iou(pred_occ, gt_occ, visible)
        self.occ[0] += i
        self.occ[1] += u
        if ref_occ is not None:
            ri, ru = occupancy_iou(ref_occ, gt_occ, visible)
            self.occ_ref[0] += ri
            self.occ_ref[1] += ru
        self.occ_frames += 1
        return i / u if u else float("nan")

    def compute(self) -> dict:
        out: dict = {}
        if self.gts:
            ap = center_distance_ap(self.preds, self.gts, self.classes, self.thresholds, min_recall=self.min_recall,
                                    min_precision=self.min_precision, class_range=self.class_range)
            vals = [v for per in ap.values() for v in per.values() if math.isfinite(v)]
            out["center_map"] = round(float(np.mean(vals)), 6) if vals else None
            out["center_ap"] = {c: {k: (round(v, 6) if math.isfinite(v) else None) for k, v in per.items()}
                                for c, per in ap.items()}
        if self.occ_frames:
            out["occupancy_iou"] = round(self.occ[0] / self.occ[1], 6) if self.occ[1] else None
            if self.occ_ref[1]:
                out["occupancy_iou_gt_depth"] = round(self.occ_ref[0] / self.occ_ref[1], 6)
        return out
