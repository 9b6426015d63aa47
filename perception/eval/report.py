"""``report.md`` of ``perception eval``: metric tables, precision-recall curves and a grid of
qualitative images (predicted vs ground-truth boxes, predicted vs ground-truth depth)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from perception.eval.depth import EIGEN_KEYS

log = logging.getLogger(__name__)

__all__ = ["write_report", "plot_pr_curves", "plot_qualitative", "colorize_depth", "draw_boxes", "write_metrics"]

PRED_COLOR = (255, 64, 32)   # RGB
GT_COLOR = (40, 220, 60)


def _fmt(v: Any, pct: bool = False) -> str:
    if v is None:
        return "–"
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        return str(v)
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    return f"{100 * f:.1f}" if pct else f"{f:.3f}"


def write_metrics(metrics: dict, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(metrics, indent=2, allow_nan=False) + "\n")
    return path


def colorize_depth(depth: np.ndarray | None, vmax: float = 80.0, shape: tuple[int, int] | None = None,
                   vmin: float = 2.0) -> np.ndarray:
    """RGB uint8 of a depth map (inverse depth on a fixed vmin..vmax scale, 'magma'; invalid = black)."""
    import matplotlib

    if depth is None:
        h, w = shape or (64, 64)
        return np.zeros((h, w, 3), np.uint8)
    d = np.asarray(depth, np.float32)
    valid = np.isfinite(d) & (d > 0)
    x = np.zeros_like(d)  # inverse depth on a fixed scale, so maps of a row are comparable
    x[valid] = (1.0 / np.clip(d[valid], vmin, vmax) - 1.0 / vmax) / (1.0 / vmin - 1.0 / vmax)
    rgb = (matplotlib.colormaps["magma"](0.15 + 0.85 * x)[..., :3] * 255).astype(np.uint8)
    rgb[~valid] = 0
    if valid.mean() < 0.3:  # sparse LiDAR: thicken the points so they are visible
        rgb = cv2.dilate(rgb, np.ones((3, 3), np.uint8))
    return rgb


def draw_boxes(image: np.ndarray, boxes: np.ndarray, labels: list[str], color: tuple[int, int, int],
               scores: np.ndarray | None = None, thickness: int = 1) -> np.ndarray:
    out = np.ascontiguousarray(image.copy())
    for i, b in enumerate(np.asarray(boxes).reshape(-1, 4)):
        x1, y1, x2, y2 = (int(round(v)) for v in b)
        cv2.rectangle(out, (x1, y1), (x2, y2), color, thickness, cv2.LINE_AA)
        text = labels[i] if i < len(labels) else ""
        if scores is not None and i < len(scores):
            text += f" {scores[i]:.2f}"
        if text:
            cv2.putText(out, text, (x1, max(y1 - 2, 8)), cv2.FONT_HERSHEY_SIMPLEX, 0.3, color, 1, cv2.LINE_AA)
    return out


def plot_pr_curves(pr: dict, path: str | Path) -> Path | None:
    """Precision-recall curves per class at IoU 0.5 (COCO interpolated precision)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not pr or not pr.get("precision"):
        return None
    fig, ax = plt.subplots(figsize=(5, 4), dpi=110)
    rec = np.asarray(pr["recall"])
    for name, prec in pr["precision"].items():
        p = np.asarray(prec)
        ax.plot(rec, p, label=f"{name} (AP50 {p.mean():.2f})")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.set_title("2D detection, IoU 0.5")
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


QUALITATIVE_MIN_SCORE = 0.3  # the metrics use every detection; the pictures only confident ones


def plot_qualitative(views: list, path: str | Path, max_depth: float = 80.0,
                     min_score: float = QUALITATIVE_MIN_SCORE) -> Path | None:
    """One row per camera image: prediction boxes (red, score >= ``min_score``) over ground
    truth (green) | predicted depth | ground-truth depth."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not views:
        return None
    n = len(views)
    h, w = views[0].image.shape[:2]
    fig, axes = plt.subplots(n, 3, figsize=(3 * 3.2, n * 3.2 * h / w + 0.4), dpi=110, squeeze=False)
    for r, v in enumerate(views):
        img = draw_boxes(v.image, v.gt_boxes, v.gt_labels, GT_COLOR)
        keep = np.asarray(v.pred_scores) >= min_score
        img = draw_boxes(img, np.asarray(v.pred_boxes)[keep], [lab for lab, k in zip(v.pred_labels, keep) if k],
                         PRED_COLOR, np.asarray(v.pred_scores)[keep])
        panels = [(img, f"{v.name}: pred >= {min_score:g} (red) / GT (green)"),
                  (colorize_depth(v.pred_depth, max_depth, (h, w)),
                   "predicted depth" if v.pred_depth is not None else "the model predicts no depth"),
                  (colorize_depth(v.gt_depth, max_depth, (h, w)), "ground-truth depth" if v.gt_depth is not None
                   else "no depth ground truth")]
        for c, (im, title) in enumerate(panels):
            ax = axes[r, c]
            ax.imshow(im)
            ax.set_title(title, fontsize=6)
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def _detection_table(det: dict) -> list[str]:
    lines = ["## 2D detection", "",
             f"mAP50 **{_fmt(det.get('map50'), True)}**, COCO mAP@[.5:.95] **{_fmt(det.get('coco_map'), True)}** "
             "(101-point interpolation, max 100 detections per image; values in %).", "",
             "| class | GT | AP50 | COCO AP | KITTI AP\\|R40 easy | moderate | hard |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name, v in det.get("ap50", {}).items():
        k = det.get("kitti_ap_r40", {}).get(name, {})
        lines.append(f"| {name} | {det.get('num_gt', {}).get(name, '–')} | {_fmt(v, True)} | "
                     f"{_fmt(det.get('coco_ap', {}).get(name), True)} | {_fmt(k.get('easy'), True)} | "
                     f"{_fmt(k.get('moderate'), True)} | {_fmt(k.get('hard'), True)} |")
    lines += ["", "Classes without ground truth show –; they are left out of the means.", ""]
    by_size = det.get("by_size")
    if by_size:
        names = list(det.get("ap50", {}))
        lines += ["By object size (COCO area ranges in original-image pixels: small < 32², medium 32²-96², "
                  "large > 96²): AP50 per class (GT count).", "",
                  "| size | mAP50 | COCO mAP | " + " | ".join(names) + " |", "|---|---:|---:|" + "---:|" * len(names)]
        for size, v in by_size.items():
            cells = [f"{_fmt(v['ap50'].get(n), True)} ({v['num_gt'].get(n, 0)})" for n in names]
            lines.append(f"| {size} | {_fmt(v.get('map50'), True)} | {_fmt(v.get('coco_map'), True)} | "
                         + " | ".join(cells) + " |")
        lines.append("")
    return lines


def _depth_table(dep: dict) -> list[str]:
    lines = ["## Depth (Eigen metrics, GT 1e-3..80 m)", "",
             "| | " + " | ".join(EIGEN_KEYS) + " |", "|---|" + "---:|" * len(EIGEN_KEYS),
             "| metric | " + " | ".join(_fmt(dep.get(k)) for k in EIGEN_KEYS) + " |",
             "| median-scaled | " + " | ".join(_fmt(dep.get(f"{k}_median_scaled")) for k in EIGEN_KEYS) + " |", "",
             f"Mean median-scaling ratio {_fmt(dep.get('median_scale_ratio'))} (relative std "
             f"{_fmt(dep.get('median_scale_ratio_std'))}) over {dep.get('images', '–')} images; "
             "lower is better for abs_rel..rmse_log, higher for a1..a3.", ""]
    rng = dep.get("by_range")
    if rng:
        lines += ["By ground-truth distance (metric, pooled over pixels; bias = geometric mean of pred / gt, "
                  "above 1 = too far):", "", "| range (m) | abs_rel | bias | pixels |", "|---|---:|---:|---:|"]
        lines += [f"| {k} | {_fmt(v['abs_rel'])} | {_fmt(v['bias'])} | {v['pixels']} |" for k, v in rng.items()]
        lines.append("")
    return lines


def _bev_table(bev: dict) -> list[str]:
    lines = ["## Bird's-eye view", ""]
    if "center_map" in bev:
        lines += [f"Centre-distance mAP (nuScenes-style) **{_fmt(bev.get('center_map'), True)}** %.", ""]
        ap = bev.get("center_ap", {})
        ths = next(iter(ap.values()), {}).keys() if ap else []
        lines += ["| class | " + " | ".join(f"{t} m" for t in ths) + " |", "|---|" + "---:|" * len(list(ths))]
        for name, per in ap.items():
            lines.append(f"| {name} | " + " | ".join(_fmt(per[t], True) for t in per) + " |")
        lines.append("")
    if "occupancy_iou" in bev:
        lines += [f"Occupancy IoU (predicted depth, visible cells): **{_fmt(bev.get('occupancy_iou'))}**"
                  + (f"; the same lifting of the ground-truth depth reaches {_fmt(bev['occupancy_iou_gt_depth'])}"
                     if "occupancy_iou_gt_depth" in bev else "") + ".", ""]
    return lines


def write_report(evaluation: Any, out_dir: str | Path, title: str = "Evaluation") -> Path:
    """Write ``report.md``, ``pr_curves.png`` and ``qualitative.png`` into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    m = evaluation.metrics
    meta = m.get("meta", {})
    lines = [f"# {title}", "",
             "| | |", "|---|---|"]
    for k in ("model", "backend", "dataset", "data", "seed", "frames", "size", "score_thresh", "date"):
        if k in meta:
            lines.append(f"| {k} | {meta[k]} |")
    lines.append("")
    if "detection" in m:
        lines += _detection_table(m["detection"])
        if plot_pr_curves(evaluation.pr_curves or {}, out / "pr_curves.png"):
            lines += ["![precision-recall curves](pr_curves.png)", ""]
    if "depth" in m:
        lines += _depth_table(m["depth"])
    if "bev" in m:
        lines += _bev_table(m["bev"])
    if "predictions" in m:
        p = m["predictions"]
        lines += ["## Predictions (no ground truth)", "",
                  f"{p.get('detections_per_image')} detections per image; median predicted depth "
                  f"{p.get('median_depth_m')} m.", ""]
    if "teacher_agreement" in m:
        t = m["teacher_agreement"]
        r = t["rule"]
        lines += ["## Agreement with the reference detector", "",
                  f"Reference: `{t.get('teacher')}`; its cars with score >= {r['reference_score']} and height >= "
                  f"{r['reference_min_height_px']} px; ours found = a car box with score >= {r['score']} at IoU >= "
                  f"{r['iou']}.", "",
                  "| images | with a reference car | cars found in | reference cars | car recall | our cars / image |",
                  "|---|---|---|---|---|---|",
                  f"| {t['images']} | {t['images_with_reference_car']} | {_fmt(t['car_found_rate'], pct=True)} | "
                  f"{t['reference_cars']} | {_fmt(t['car_recall'], pct=True)} | {t['predicted_cars_per_image']} |", ""]
        if t.get("unmatched_vehicle_boxes_per_image") is not None:
            lines += [f"Our vehicle boxes (car, truck, bus) with score >= {r['score']}: "
                      f"{t['vehicle_boxes_per_image']} per image, of which {t['unmatched_vehicle_boxes_per_image']} "
                      f"match no reference vehicle (score >= {r.get('vehicle_reference_score')}, IoU >= {r['iou']}; "
                      f"false or merged boxes, or vehicles the reference misses), "
                      f"{t['unmatched_vehicle_boxes_per_image_40px']} of them at least "
                      f"{r['reference_min_height_px']:g} px tall.", ""]
    if plot_qualitative(evaluation.qualitative, out / "qualitative.png"):
        lines += ["## Qualitative", "", f"Boxes: prediction red (score >= {QUALITATIVE_MIN_SCORE:g}, with score), "
                  "ground truth green. Depth: inverse "
                  "depth colour map, black = no ground truth.", "", "![qualitative results](qualitative.png)", ""]
    lines += ["Metric definitions: docs/evaluation.md.", ""]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    log.info("wrote %s", path)
    return path
