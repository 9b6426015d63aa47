"""2D detection metrics: AP50 per class, COCO mAP@[.5:.95] and KITTI AP|R40.

All metrics are computed from the same per-image records (:class:`ImageDetections`): boxes
in **pixels of the original image** (xyxy, continuous coordinates), integer labels indexing
``classes``, and for the ground truth optional ``ignore`` (regions that neither count as
positives nor create false positives: KITTI DontCare, tiny synthetic objects, objects outside
the evaluated crop), ``truncation`` (0..1) and ``occlusion`` (KITTI levels 0..3).
A ground-truth box with label -1 and ``ignore`` is a class-agnostic "don't care" region;
label -1 without ``ignore`` (a class we do not evaluate) is dropped.

COCO (:func:`coco_ap`) follows ``pycocotools.COCOeval`` for ``iouType="bbox"``, area range
"all" and ``maxDets=100``: per image and class, detections are matched greedily in score
order to the unmatched ground truth with the highest IoU >= t (non-ignored first); ignored
boxes behave like COCO "crowd" regions (IoU = intersection / detection area, may absorb any
number of detections, which then count neither as true nor as false positives). Precision is
made monotone and read at 101 recall points 0, 0.01, ..., 1. ``ap50`` is that AP at IoU 0.5;
``coco_map`` the mean over IoU 0.50:0.05:0.95 and over classes. Classes without any
(non-ignored) ground truth are left out of the means (as COCO does). ``by_size`` repeats AP50
and COCO mAP for COCO's area ranges (``COCO_AREA_RANGES``: small < 32², medium 32²-96², large
> 96² px, box area in original-image pixels): ground truth outside the range is ignored (it may
absorb one detection, which then counts neither way) and so are unmatched detections outside it.

KITTI (:func:`kitti_ap_r40`) follows the matching rules of the KITTI object devkit
(``evaluate_object.cpp`` / ``kitti_object_eval_python``): per difficulty Easy/Moderate/Hard,
ground truth with height < 40/25/25 px, occlusion > 0/1/2 or truncation > 0.15/0.3/0.5 is
*ignored* (a detection matched to it is not a false positive, missing it is not a false
negative), detections lower than the minimum height are ignored, a detection matches when
IoU > 0.7 (car, truck, bus) or > 0.5 (pedestrian, cyclist), and unmatched detections that
overlap a DontCare region by more than that (intersection / detection area) are not false
positives. AP|R40 is the mean interpolated precision at the 40 recall positions 1/40..40/40
(Simonelli et al., 2019), where the precision at recall r is the best precision among score
thresholds that reach recall >= r. The official devkit picks its 41 thresholds with an
approximate sampling that returns AP 0 when a class has a single ground-truth box; here the
threshold for recall k/40 is the score of the ceil(k N / 40)-th true positive, which equals
the devkit's choice on large sets and is exact on small ones.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

log = logging.getLogger(__name__)

__all__ = ["ImageDetections", "box_iou", "box_ioa", "coco_ap", "ap50", "kitti_ap_r40", "DetectionEvaluator",
           "COCO_IOU_THRESHOLDS", "COCO_RECALL_POINTS", "COCO_AREA_RANGES", "KITTI_DIFFICULTIES", "KITTI_MIN_HEIGHT",
           "KITTI_MAX_OCCLUSION", "KITTI_MAX_TRUNCATION", "KITTI_IOU"]

COCO_IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
COCO_RECALL_POINTS = np.linspace(0.0, 1.0, 101)
COCO_MAX_DETS = 100
COCO_AREA_RANGES = {"small": (0.0, 32.0 ** 2), "medium": (32.0 ** 2, 96.0 ** 2), "large": (96.0 ** 2, 1e10)}

KITTI_DIFFICULTIES = ("easy", "moderate", "hard")
KITTI_MIN_HEIGHT = (40.0, 25.0, 25.0)
KITTI_MAX_OCCLUSION = (0, 1, 2)
KITTI_MAX_TRUNCATION = (0.15, 0.3, 0.5)
# minimum overlap per class name (KITTI: 0.7 for cars, 0.5 for pedestrians and cyclists)
KITTI_IOU = {"car": 0.7, "truck": 0.7, "bus": 0.7, "pedestrian": 0.5, "cyclist": 0.5}
KITTI_RECALL_POSITIONS = 40


@dataclass
class ImageDetections:
    """Ground truth and predictions of one image (numpy, original-image pixels).

    ``gt_boxes`` [G, 4], ``gt_labels`` [G] (-1: class-agnostic region when ignored, else dropped),
    ``gt_ignore`` [G] bool, ``gt_truncation`` [G] (0..1), ``gt_occlusion`` [G] (0..3);
    ``boxes`` [D, 4], ``scores`` [D], ``labels`` [D].
    """

    gt_boxes: np.ndarray
    gt_labels: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    gt_ignore: np.ndarray | None = None
    gt_truncation: np.ndarray | None = None
    gt_occlusion: np.ndarray | None = None
    image_id: str = ""

    def __post_init__(self) -> None:
        self.gt_boxes = np.asarray(self.gt_boxes, np.float64).reshape(-1, 4)
        self.gt_labels = np.asarray(self.gt_labels, np.int64).reshape(-1)
        G = len(self.gt_boxes)
        if len(self.gt_labels) != G:
            raise ValueError(f"image {self.image_id!r}: {G} ground-truth boxes but {len(self.gt_labels)} labels")
        self.gt_ignore = (np.zeros(G, bool) if self.gt_ignore is None
                          else np.asarray(self.gt_ignore, bool).reshape(-1))
        self.gt_truncation = (np.zeros(G) if self.gt_truncation is None
                              else np.nan_to_num(np.asarray(self.gt_truncation, np.float64).reshape(-1), nan=0.0))
        self.gt_occlusion = (np.zeros(G, np.int64) if self.gt_occlusion is None
                             else np.asarray(self.gt_occlusion, np.int64).reshape(-1))
        self.boxes = np.asarray(self.boxes, np.float64).reshape(-1, 4)
        self.scores = np.asarray(self.scores, np.float64).reshape(-1)
        self.labels = np.asarray(self.labels, np.int64).reshape(-1)
        D = len(self.boxes)
        if len(self.scores) != D or len(self.labels) != D:
            raise ValueError(f"image {self.image_id!r}: {D} predicted boxes, {len(self.scores)} scores, "
                             f"{len(self.labels)} labels")
        for name in ("gt_ignore", "gt_truncation", "gt_occlusion"):
            if len(getattr(self, name)) != G:
                raise ValueError(f"image {self.image_id!r}: {name} has {len(getattr(self, name))} values for {G} boxes")


# ---------------------------------------------------------------------------- geometry
def _area(b: np.ndarray) -> np.ndarray:
    return np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)


def _intersection(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.clip(rb - lt, 0, None)
    return wh[..., 0] * wh[..., 1]


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix [len(a), len(b)] of xyxy boxes (continuous coordinates, no +1)."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    inter = _intersection(a, b)
    union = _area(a)[:, None] + _area(b)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def box_ioa(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over the area of ``a`` [len(a), len(b)] (COCO crowd / KITTI DontCare overlap)."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    inter = _intersection(a, b)
    area = _area(a)[:, None]
    return np.where(area > 0, inter / np.maximum(area, 1e-12), 0.0)


# ---------------------------------------------------------------------------- COCO
def _coco_image_class(img: ImageDetections, cls: int, iou_thrs: np.ndarray, max_dets: int,
                      area_rng: tuple[float, float] | None = None
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """pycocotools ``evaluateImg`` for one image and class: (scores [D], matched [T, D],
    ignored [T, D], number of non-ignored ground truth). ``area_rng`` (lo, hi): ground truth
    outside it is ignored but matchable once, unmatched detections outside it are ignored."""
    gmask = (img.gt_labels == cls) | ((img.gt_labels < 0) & img.gt_ignore)
    g = img.gt_boxes[gmask]
    crowd = img.gt_ignore[gmask]                 # ignore regions: COCO "crowd" semantics
    out_g = np.zeros(len(g), bool) if area_rng is None else \
        ~crowd & ((_area(g) < area_rng[0]) | (_area(g) > area_rng[1]))
    gig = crowd | out_g
    order_g = np.argsort(gig, kind="mergesort")  # non-ignored first
    g, gig, crowd, out_g = g[order_g], gig[order_g], crowd[order_g], out_g[order_g]
    dmask = img.labels == cls
    d, s = img.boxes[dmask], img.scores[dmask]
    order_d = np.argsort(-s, kind="mergesort")[:max_dets]
    d, s = d[order_d], s[order_d]
    T, D, G = len(iou_thrs), len(d), len(g)
    matched = np.zeros((T, D), bool)
    ignored = np.zeros((T, D), bool)
    npos = int((~gig).sum())
    if D and G:
        ious = np.where(crowd[None, :], box_ioa(d, g), box_iou(d, g))  # crowd: intersection / det area
        taken = np.zeros((T, G), bool)  # crowd regions are never taken
        thr = np.minimum(iou_thrs, 1 - 1e-10)[:, None]
        rev = np.arange(G)[::-1]
        for j in range(D):
            ok = ious[j][None, :] >= thr                                   # [T, G]
            cand = ok & ~taken & ~gig[None, :]
            has = cand.any(1)
            # ignored ground truth (crowd, or outside the area range and not yet taken) only when
            # no real one matches; the detection then counts neither way
            icand = ok & ~has[:, None] & (crowd[None, :] | (out_g[None, :] & ~taken))
            has_i = icand.any(1)
            # highest IoU (COCO keeps the last of equal IoUs: argmax over the reversed order)
            best = G - 1 - np.argmax(np.where(cand, ious[j][None, :], -1.0)[:, rev], axis=1)
            best_i = G - 1 - np.argmax(np.where(icand, ious[j][None, :], -1.0)[:, rev], axis=1)
            matched[has, j] = True
            taken[np.nonzero(has)[0], best[has]] = True
            matched[has_i, j] = True
            ignored[has_i, j] = True
            taken[np.nonzero(has_i)[0], best_i[has_i]] = True
    if area_rng is not None and D:
        out_d = (_area(d) < area_rng[0]) | (_area(d) > area_rng[1])
        ignored |= ~matched & out_d[None, :]
    return s, matched, ignored, npos


def _pr_101(scores: np.ndarray, matched: np.ndarray, ignored: np.ndarray, npos: int,
            rec_pts: np.ndarray = COCO_RECALL_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """COCO accumulate for one class: precision at ``rec_pts`` [T, R] and final recall [T]."""
    T = matched.shape[0]
    R = len(rec_pts)
    order = np.argsort(-scores, kind="mergesort")
    tps = (matched & ~ignored)[:, order]
    fps = (~matched & ~ignored)[:, order]
    tp_sum = np.cumsum(tps, 1, dtype=np.float64)
    fp_sum = np.cumsum(fps, 1, dtype=np.float64)
    prec_out = np.zeros((T, R))
    rec_out = np.zeros(T)
    for t in range(T):
        tp, fp = tp_sum[t], fp_sum[t]
        rc = tp / npos
        pr = tp / (fp + tp + np.spacing(1))
        rec_out[t] = rc[-1] if len(rc) else 0.0
        pr = np.maximum.accumulate(pr[::-1])[::-1] if len(pr) else pr
        inds = np.searchsorted(rc, rec_pts, side="left")
        valid = inds < len(pr)
        prec_out[t, valid] = pr[inds[valid]]
    return prec_out, rec_out


def coco_ap(images: Sequence[ImageDetections], num_classes: int, iou_thrs: np.ndarray = COCO_IOU_THRESHOLDS,
            max_dets: int = COCO_MAX_DETS, area_rng: tuple[float, float] | None = None) -> dict[str, np.ndarray]:
    """COCO bbox AP per class and IoU threshold (``area_rng``: only boxes of that pixel area,
    e.g. ``COCO_AREA_RANGES["small"]``).

    Returns ``ap`` [C, T] (NaN for classes without ground truth), ``precision`` [C, T, 101]
    (interpolated precision at the recall points), ``recall`` [C, T] (final recall) and
    ``num_gt`` [C].
    """
    iou_thrs = np.asarray(iou_thrs, np.float64).reshape(-1)
    C, T = num_classes, len(iou_thrs)
    ap = np.full((C, T), np.nan)
    prec = np.zeros((C, T, len(COCO_RECALL_POINTS)))
    rec = np.zeros((C, T))
    num_gt = np.zeros(C, np.int64)
    for c in range(C):
        parts = [_coco_image_class(img, c, iou_thrs, max_dets, area_rng) for img in images]
        npos = sum(p[3] for p in parts)
        num_gt[c] = npos
        if npos == 0:
            continue
        scores = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0)
        matched = np.concatenate([p[1] for p in parts], 1) if parts else np.zeros((T, 0), bool)
        ignored = np.concatenate([p[2] for p in parts], 1) if parts else np.zeros((T, 0), bool)
        prec[c], rec[c] = _pr_101(scores, matched, ignored, npos)
        ap[c] = prec[c].mean(1)
    return {"ap": ap, "precision": prec, "recall": rec, "num_gt": num_gt}


def ap50(images: Sequence[ImageDetections], num_classes: int) -> np.ndarray:
    """AP at IoU 0.5 per class (COCO 101-point interpolation), NaN for classes without ground truth."""
    return coco_ap(images, num_classes, iou_thrs=np.array([0.5]))["ap"][:, 0]


# ---------------------------------------------------------------------------- KITTI
@dataclass
class _KittiImage:
    gt: np.ndarray           # [G, 4]
    ignored_gt: np.ndarray   # [G] 0 valid, 1 ignored (boxes of other classes are removed)
    det: np.ndarray          # [D, 4]
    scores: np.ndarray       # [D]
    ignored_det: np.ndarray  # [D] 0 valid, 1 ignored (too small)
    dc: np.ndarray           # [K, 4] DontCare regions


def _kitti_clean(img: ImageDetections, cls: int, difficulty: int) -> _KittiImage:
    """KITTI ``clean_data``: which boxes count, which are ignored, and the DontCare regions."""
    h = img.gt_boxes[:, 3] - img.gt_boxes[:, 1]
    hard = ((img.gt_occlusion > KITTI_MAX_OCCLUSION[difficulty]) | (img.gt_truncation > KITTI_MAX_TRUNCATION[difficulty])
            | (h < KITTI_MIN_HEIGHT[difficulty]))
    own = img.gt_labels == cls
    gmask = own
    ignored_gt = (hard | img.gt_ignore)[gmask].astype(np.int64)
    dc = img.gt_boxes[(img.gt_labels < 0) & img.gt_ignore]
    dmask = img.labels == cls
    det = img.boxes[dmask]
    dh = det[:, 3] - det[:, 1]
    return _KittiImage(img.gt_boxes[gmask], ignored_gt, det, img.scores[dmask],
                       (dh < KITTI_MIN_HEIGHT[difficulty]).astype(np.int64), dc)


def _kitti_tp_scores(k: _KittiImage, min_overlap: float) -> tuple[list[float], int]:
    """First pass (``compute_fp=False``): scores of the true positives, number of valid GT."""
    G, D = len(k.gt), len(k.det)
    n_valid = int((k.ignored_gt == 0).sum())
    if G == 0 or D == 0:
        return [], n_valid
    ov = box_iou(k.det, k.gt)
    assigned = np.zeros(D, bool)
    out = []
    for i in range(G):
        cand = ~assigned & (ov[:, i] > min_overlap)
        if not cand.any():
            continue
        j = int(np.argmax(np.where(cand, k.scores, -np.inf)))
        assigned[j] = True
        if k.ignored_gt[i] == 0 and k.ignored_det[j] == 0:
            out.append(float(k.scores[j]))
    return out, n_valid


def _kitti_counts(k: _KittiImage, min_overlap: float, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Second pass (``compute_fp=True``) for every threshold at once: (tp [T], fp [T])."""
    T, G, D = len(thresholds), len(k.gt), len(k.det)
    tp = np.zeros(T, np.int64)
    if D == 0:
        return tp, np.zeros(T, np.int64)
    above = k.scores[None, :] >= thresholds[:, None]            # [T, D]
    assigned = np.zeros((T, D), bool)
    if G:
        ov = box_iou(k.det, k.gt)
        det_ok = k.ignored_det == 0
        for i in range(G):
            cand = above & ~assigned & (ov[:, i] > min_overlap)[None, :]   # [T, D]
            valid = cand & det_ok[None, :]
            has_valid = valid.any(1)
            j_valid = np.argmax(np.where(valid, ov[:, i][None, :], -1.0), 1)
            ign = cand & ~det_ok[None, :]
            has_ign = ign.any(1) & ~has_valid
            j_ign = np.argmax(ign, 1)  # the first ignored candidate
            rows = np.nonzero(has_valid | has_ign)[0]
            j = np.where(has_valid, j_valid, j_ign)[rows]
            assigned[rows, j] = True
            if k.ignored_gt[i] == 0:
                tp[np.nonzero(has_valid)[0]] += 1
    counted = above & ~assigned & (k.ignored_det == 0)[None, :]
    if len(k.dc):
        in_dc = (box_ioa(k.det, k.dc) > min_overlap).any(1)
        counted &= ~in_dc[None, :]
    return tp, counted.sum(1)


def kitti_ap_r40(images: Sequence[ImageDetections], classes: Sequence[str]) -> dict[str, dict[str, float]]:
    """KITTI 2D AP|R40 per class and difficulty (0..1); NaN where a class has no valid ground truth."""
    out: dict[str, dict[str, float]] = {}
    for c, name in enumerate(classes):
        min_ov = KITTI_IOU.get(name, 0.5)
        out[name] = {}
        for d, diff in enumerate(KITTI_DIFFICULTIES):
            cleaned = [_kitti_clean(img, c, d) for img in images]
            scores: list[float] = []
            n_gt = 0
            for k in cleaned:
                s, n = _kitti_tp_scores(k, min_ov)
                scores += s
                n_gt += n
            out[name][diff] = _kitti_ap_from(cleaned, scores, n_gt, min_ov)
    return out


def _kitti_ap_from(cleaned: list[_KittiImage], tp_scores: list[float], n_gt: int, min_ov: float) -> float:
    if n_gt == 0:
        return float("nan")
    s = np.sort(np.asarray(tp_scores))[::-1]
    if len(s) == 0:
        return 0.0
    ks = np.arange(1, KITTI_RECALL_POSITIONS + 1)
    need = np.ceil(ks * n_gt / KITTI_RECALL_POSITIONS - 1e-9).astype(np.int64)
    reach = need <= len(s)
    thr = np.where(reach, s[np.clip(need - 1, 0, len(s) - 1)], np.inf)
    uniq = np.unique(thr[reach])
    tp = np.zeros(len(uniq), np.int64)
    fp = np.zeros(len(uniq), np.int64)
    for k in cleaned:
        a, b = _kitti_counts(k, min_ov, uniq)
        tp += a
        fp += b
    prec_u = tp / np.maximum(tp + fp, 1)
    prec = np.zeros(KITTI_RECALL_POSITIONS)
    prec[reach] = prec_u[np.searchsorted(uniq, thr[reach])]
    prec = np.maximum.accumulate(prec[::-1])[::-1]  # best precision at recall >= r
    return float(prec.mean())


# ---------------------------------------------------------------------------- evaluator
def _nanmean(values: Iterable[float]) -> float:
    v = np.asarray(list(values), np.float64)
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else float("nan")


class DetectionEvaluator:
    """Collects :class:`ImageDetections` and computes the ``detection`` block of ``metrics.json``."""

    def __init__(self, classes: Sequence[str]) -> None:
        self.classes = tuple(classes)
        self.images: list[ImageDetections] = []

    def __len__(self) -> int:
        return len(self.images)

    def add(self, image: ImageDetections) -> None:
        self.images.append(image)

    def compute(self) -> dict:
        """``{"ap50": {cls: v}, "map50": v, "coco_map": v, "kitti_ap_r40": {cls: {easy, moderate,
        hard}}, "coco_ap": {cls: v}, "num_gt": {cls: n}, "by_size": {small|medium|large: {map50,
        coco_map, ap50: {cls: v}, num_gt: {cls: n}}}}``; classes without ground truth get
        ``None`` (JSON null) and are left out of the means."""
        C = len(self.classes)
        res = coco_ap(self.images, C)
        ap = res["ap"]
        self.pr = {"precision": res["precision"][:, 0], "recall_points": COCO_RECALL_POINTS,
                   "num_gt": res["num_gt"]}
        kitti = kitti_ap_r40(self.images, self.classes)
        ap50_c = {n: _num(ap[c, 0]) for c, n in enumerate(self.classes)}
        by_size = {}
        for size, rng in COCO_AREA_RANGES.items():
            r = coco_ap(self.images, C, area_rng=rng)
            by_size[size] = {"map50": _num(_nanmean(r["ap"][:, 0])), "coco_map": _num(_nanmean(r["ap"].mean(1))),
                             "ap50": {n: _num(r["ap"][c, 0]) for c, n in enumerate(self.classes)},
                             "num_gt": {n: int(r["num_gt"][c]) for c, n in enumerate(self.classes)}}
        return {
            "ap50": ap50_c,
            "map50": _num(_nanmean(ap[:, 0])),
            "coco_map": _num(_nanmean(ap.mean(1))),
            "kitti_ap_r40": {n: {d: _num(v) for d, v in kitti[n].items()} for n in self.classes},
            "coco_ap": {n: _num(float(np.mean(ap[c]))) for c, n in enumerate(self.classes)},
            "num_gt": {n: int(res["num_gt"][c]) for c, n in enumerate(self.classes)},
            "by_size": by_size,
        }


def _num(v: float) -> float | None:
    v = float(v)
    return None if not math.isfinite(v) else round(v, 6)
