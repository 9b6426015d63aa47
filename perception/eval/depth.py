"""Monocular depth metrics of the KITTI Eigen protocol (Eigen et al. 2014; as in monodepth2).

Per image, over the pixels whose ground-truth depth lies in ``[min_depth, max_depth]``
(default 1e-3..80 m; 0 = no ground truth, e.g. between LiDAR points):

- ``abs_rel``  = mean(|pred - gt| / gt)
- ``sq_rel``   = mean((pred - gt)^2 / gt)
- ``rmse``     = sqrt(mean((pred - gt)^2))
- ``rmse_log`` = sqrt(mean((log pred - log gt)^2))
- ``a1, a2, a3`` = fraction of pixels with max(pred / gt, gt / pred) < 1.25, 1.25^2, 1.25^3

The prediction is clamped to ``[min_depth, max_depth]`` before the metrics. The
*median-scaled* variant first multiplies the prediction by median(gt) / median(pred) of that
image (the protocol for scale-ambiguous self-supervised models; for a metric model it shows how
much error is a global scale). As in the Eigen protocol, the metrics of each image are
computed separately and then averaged over images (images without valid ground truth are
skipped), so a dense synthetic image and a sparse LiDAR image weigh the same; ``rmse`` is the
mean of per-image RMSEs.

``by_range`` splits the metric (not median-scaled) errors by ground-truth distance (0-10, 10-20,
20-40, 40-80 m), pooled over all pixels of the set (an image may have no pixel in a range):
``abs_rel``, ``bias`` = exp(mean log(pred / gt)) (1.3 = 30 % too far) and ``pixels``. It shows
where a model's depth is wrong, e.g. right on the road near the car and too far on the
buildings beyond.
"""

from __future__ import annotations

import logging
import math

import numpy as np

log = logging.getLogger(__name__)

__all__ = ["EIGEN_KEYS", "eigen_metrics", "DepthEvaluator", "MIN_DEPTH", "MAX_DEPTH", "DEPTH_RANGES"]

EIGEN_KEYS = ("abs_rel", "sq_rel", "rmse", "rmse_log", "a1", "a2", "a3")
MIN_DEPTH = 1e-3
MAX_DEPTH = 80.0
DEPTH_RANGES = ((0.0, 10.0), (10.0, 20.0), (20.0, 40.0), (40.0, 80.0))   # metres of ground truth


def eigen_metrics(pred: np.ndarray, gt: np.ndarray, *, min_depth: float = MIN_DEPTH, max_depth: float = MAX_DEPTH,
                  median_scaling: bool = False, mask: np.ndarray | None = None) -> dict[str, float] | None:
    """Eigen metrics of one depth map pair (same shape, metres); None when no pixel is valid.

    With ``median_scaling`` the result also has ``ratio`` = median(gt) / median(pred).
    """
    pred = np.asarray(pred, np.float64)
    gt = np.asarray(gt, np.float64)
    if pred.shape != gt.shape:
        raise ValueError(f"depth prediction shape {pred.shape} differs from ground truth {gt.shape}")
    valid = np.isfinite(gt) & (gt >= min_depth) & (gt <= max_depth)
    if mask is not None:
        valid &= np.asarray(mask, bool)
    if not valid.any():
        return None
    g = gt[valid]
    p = np.nan_to_num(pred[valid], nan=min_depth, posinf=max_depth, neginf=min_depth)
    out: dict[str, float] = {}
    if median_scaling:
        med = float(np.median(p))
        ratio = float(np.median(g)) / med if med > 0 else 1.0
        p = p * ratio
        out["ratio"] = ratio
    p = np.clip(p, min_depth, max_depth)
    thresh = np.maximum(g / p, p / g)
    out.update(
        abs_rel=float(np.mean(np.abs(p - g) / g)),
        sq_rel=float(np.mean((p - g) ** 2 / g)),
        rmse=float(np.sqrt(np.mean((p - g) ** 2))),
        rmse_log=float(np.sqrt(np.mean((np.log(p) - np.log(g)) ** 2))),
        a1=float(np.mean(thresh < 1.25)),
        a2=float(np.mean(thresh < 1.25 ** 2)),
        a3=float(np.mean(thresh < 1.25 ** 3)),
    )
    return out


class DepthEvaluator:
    """Accumulates per-image Eigen metrics (metric and median-scaled) and averages them."""

    def __init__(self, min_depth: float = MIN_DEPTH, max_depth: float = MAX_DEPTH) -> None:
        self.min_depth, self.max_depth = float(min_depth), float(max_depth)
        self.metric: list[dict[str, float]] = []
        self.scaled: list[dict[str, float]] = []
        self.valid_pixels = 0
        # per range: [sum |p - g| / g, sum log(p / g), pixels]
        self._ranges = np.zeros((len(DEPTH_RANGES), 3))

    def __len__(self) -> int:
        return len(self.metric)

    def update(self, pred: np.ndarray, gt: np.ndarray, mask: np.ndarray | None = None) -> dict[str, float] | None:
        """Add one image; returns its metric-depth metrics (None when it has no valid ground truth)."""
        kw = dict(min_depth=self.min_depth, max_depth=self.max_depth, mask=mask)
        m = eigen_metrics(pred, gt, **kw)
        if m is None:
            return None
        self.metric.append(m)
        self.scaled.append(eigen_metrics(pred, gt, median_scaling=True, **kw))  # type: ignore[arg-type]
        g = np.asarray(gt, np.float64)
        valid = np.isfinite(g) & (g >= self.min_depth) & (g <= self.max_depth)
        if mask is not None:
            valid &= np.asarray(mask, bool)
        self.valid_pixels += int(valid.sum())
        g = g[valid]
        p = np.clip(np.nan_to_num(np.asarray(pred, np.float64)[valid], nan=self.min_depth, posinf=self.max_depth,
                                  neginf=self.min_depth), self.min_depth, self.max_depth)
        for i, (lo, hi) in enumerate(DEPTH_RANGES):
            sel = (g >= lo) & (g < hi) if i < len(DEPTH_RANGES) - 1 else (g >= lo) & (g <= hi)
            if sel.any():
                self._ranges[i] += (np.sum(np.abs(p[sel] - g[sel]) / g[sel]), np.sum(np.log(p[sel] / g[sel])),
                                    sel.sum())
        return m

    def compute(self) -> dict[str, float]:
        """The ``depth`` block of ``metrics.json``: the Eigen keys, the same keys with
        ``_median_scaled``, ``median_scale_ratio`` (mean) and ``images``; {} without data."""
        if not self.metric:
            return {}
        out: dict[str, float] = {}
        for k in EIGEN_KEYS:
            out[k] = _r(np.mean([m[k] for m in self.metric]))
        for k in EIGEN_KEYS:
            out[f"{k}_median_scaled"] = _r(np.mean([m[k] for m in self.scaled]))
        ratios = np.array([m["ratio"] for m in self.scaled])
        out["median_scale_ratio"] = _r(ratios.mean())
        out["median_scale_ratio_std"] = _r(ratios.std() / max(ratios.mean(), 1e-12))
        out["images"] = len(self.metric)
        out["by_range"] = {f"{lo:g}-{hi:g}": {"abs_rel": _r(a / n), "bias": _r(math.exp(b / n)), "pixels": int(n)}
                           for (lo, hi), (a, b, n) in zip(DEPTH_RANGES, self._ranges) if n > 0}
        return out


def _r(v: float) -> float:
    v = float(v)
    return round(v, 6) if math.isfinite(v) else v
