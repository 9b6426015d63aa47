"""Metrics tables of a model card from the folders written by ``benchmarks/eval_model.sh``.

    python benchmarks/model_card.py runs/eval/rep-s > /tmp/tables.md

Prints markdown: the synthetic test split (fused and train form), the real samples (nuScenes
keyframe, KITTI 000008, the dashcam clip against the teacher), each with the project's accuracy targets (set for `rep-s`)
and whether they are met. Folders that are missing are left out.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

CLASSES = ("car", "truck", "bus", "pedestrian", "cyclist")


def _load(folder: Path) -> dict | None:
    f = folder / "metrics.json"
    return json.loads(f.read_text()) if f.is_file() else None


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.1f}"


def _check(value: float | None, target: float, higher_is_better: bool = True) -> str:
    if value is None:
        return "not measured"
    ok = value >= target if higher_is_better else value <= target
    return "met" if ok else "**missed**"


def synth_table(m: dict, mt: dict | None) -> list[str]:
    det, dep, bev = m["detection"], m["depth"], m["bev"]
    ap = det["ap50"]
    lines = [f"Synthetic test split: `--dataset synth --seed {m['meta'].get('seed')}` ({m['frames']} six-camera "
             f"frames = {m['frames'] * 6} images; ground-truth objects: "
             + ", ".join(f"{c} {n}" for c, n in det["num_gt"].items() if n) + ").", "",
             "| metric | fused | train form | target | |", "|---|---|---|---|---|"]

    def row(name: str, get, target: float | None, higher: bool = True, pct: bool = True) -> None:
        a = get(m)
        b = get(mt) if mt else None
        fmt = _pct if pct else (lambda v: "–" if v is None else f"{v:.3f}")
        t = "" if target is None else (f"{'>=' if higher else '<='} {_pct(target) if pct else target}")
        lines.append(f"| {name} | {fmt(a)} | {fmt(b)} | {t} | {_check(a, target, higher) if target else ''} |")

    row("map50 (classes with ground truth, %)", lambda x: x["detection"]["map50"], 0.70)
    for c in CLASSES:
        if ap.get(c) is not None:
            row(f"AP50 {c} (%)", lambda x, c=c: x["detection"]["ap50"][c], 0.85 if c == "car" else None)
    row("COCO mAP@[.5:.95] (%)", lambda x: x["detection"]["coco_map"], None)
    row("depth abs_rel (metric)", lambda x: x["depth"]["abs_rel"], 0.08, higher=False, pct=False)
    row("depth abs_rel (median-scaled)", lambda x: x["depth"]["abs_rel_median_scaled"], None, pct=False)
    row("depth a1 (%)", lambda x: x["depth"]["a1"], None)
    row("depth rmse (m)", lambda x: x["depth"]["rmse"], None, pct=False)
    row("BEV centre-distance mAP (%)", lambda x: x["bev"]["center_map"], 0.5)
    row("BEV occupancy IoU (%)", lambda x: x["bev"].get("occupancy_iou"), None)
    if mt:
        diffs = [abs((m["detection"]["map50"] or 0) - (mt["detection"]["map50"] or 0)),
                 abs(dep["abs_rel"] - mt["depth"]["abs_rel"]),
                 abs((bev["center_map"] or 0) - (mt["bev"]["center_map"] or 0))]
        lines += ["", f"Fused vs train form: largest difference {max(diffs):.4f} (map50, abs_rel, BEV mAP; target "
                  f"<= 0.002: {'met' if max(diffs) <= 0.002 else '**missed**'})."]
    return lines


def size_table(m: dict) -> list[str]:
    """AP50 by COCO object size on the synthetic split: where the detector loses its AP."""
    by = m["detection"].get("by_size")
    if not by:
        return []
    names = [c for c in CLASSES if m["detection"]["num_gt"].get(c)]
    lines = ["AP50 by object size (COCO area ranges at the evaluated resolution: small < 32x32 px, medium up to "
             "96x96, large above; ground-truth count in brackets):", "",
             "| size | map50 (%) | " + " | ".join(f"{c} (%)" for c in names) + " |",
             "|---|---|" + "---|" * len(names)]
    for size, v in by.items():
        lines.append(f"| {size} | {_pct(v['map50'])} | "
                     + " | ".join(f"{_pct(v['ap50'].get(c))} ({v['num_gt'].get(c, 0)})" for c in names) + " |")
    return lines


def real_table(nus: dict | None, kitti: dict | None, cam: dict | None, kitti_f: dict | None = None,
               cam_f: dict | None = None) -> list[str]:
    lines = ["| data | metric | value | target | |", "|---|---|---|---|---|"]
    if nus:
        car = nus["detection"]["ap50"].get("car")
        lines.append(f"| nuScenes keyframe, 6 cameras | car AP50 vs its 2D boxes (%) | {_pct(car)} | >= 50 | "
                     f"{_check(car, 0.5)} |")
        lines.append(f"| | map50 (%) | {_pct(nus['detection']['map50'])} | | |")
        a = nus["depth"]["abs_rel"]
        lines.append(f"| | depth abs_rel vs LiDAR (metric) | {a:.3f} | <= 0.25 | {_check(a, 0.25, False)} |")
        lines.append(f"| | depth abs_rel (median-scaled) | {nus['depth']['abs_rel_median_scaled']:.3f} | | |")
        if nus.get("bev", {}).get("center_map") is not None:
            lines.append(f"| | BEV centre-distance mAP (%) | {_pct(nus['bev']['center_map'])} | | |")
    if kitti:
        car = kitti["detection"]["ap50"].get("car")
        lines.append(f"| KITTI 000008 | car AP50 (%) | {_pct(car)} | | |")
        lines.append(f"| | depth abs_rel vs LiDAR (metric) | {kitti['depth']['abs_rel']:.3f} | | |")
    if cam and "teacher_agreement" in cam:
        t = cam["teacher_agreement"]
        r = t["car_found_rate"]
        lines.append(f"| dashcam `test_video.mp4` ({t['images']} frames) | frames with a teacher car where we find it "
                     f"(%) | {_pct(r)} ({t['images_with_reference_car']} frames) | >= 90 | {_check(r, 0.9)} |")
        lines.append(f"| | teacher cars found (recall, %) | {_pct(t['car_recall'])} ({t['reference_cars']} cars) "
                     f"| | |")
    if kitti_f:
        lines.append(f"| KITTI 000008 at 192x608 (fx 353 px) | car AP50 (%) | "
                     f"{_pct(kitti_f['detection']['ap50'].get('car'))} | | |")
        lines.append(f"| | depth abs_rel vs LiDAR (metric) | {kitti_f['depth']['abs_rel']:.3f} | | |")
    if cam_f and "teacher_agreement" in cam_f:
        t = cam_f["teacher_agreement"]
        lines.append(f"| dashcam at 224x384 (the `perception run` default) | frames with a teacher car where we "
                     f"find it at score >= {t['rule']['score']} (%) | {_pct(t['car_found_rate'])} | >= 90 | "
                     f"{_check(t['car_found_rate'], 0.9)} |")
        lines.append(f"| | our car boxes per frame at score >= {t['rule']['score']} | "
                     f"{t['predicted_cars_per_image']:.1f} | | |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path, help="output folder of benchmarks/eval_model.sh")
    args = ap.parse_args()
    f = args.folder
    out: list[str] = []
    synth = _load(f / "synth")
    if synth:
        out += synth_table(synth, _load(f / "synth-train-form")) + [""]
        out += size_table(synth) + [""]
    out += real_table(_load(f / "nuscenes"), _load(f / "kitti"), _load(f / "dashcam"), _load(f / "kitti-192x608"),
                      _load(f / "dashcam-224x384"))
    print("\n".join(out))


if __name__ == "__main__":
    main()
