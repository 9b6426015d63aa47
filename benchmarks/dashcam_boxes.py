"""Box statistics of a `perception run` output on real video (no ground truth needed).

    python benchmarks/dashcam_boxes.py runs/run/detections.jsonl [--frames 30] [--width 1280 --height 720]

Prints boxes per frame by class, car boxes at score >= 0.5 per frame under and over 40 px tall
(the teacher-agreement metric counts only cars at least 40 px tall, so distant cars found by
the model are not in its reference), and how many frames hold a "giant" box (covering more than
``--giant`` of the image, default a tenth): on the shared dashcam clip such boxes are false
positives (sky, trees, near road), which is how the model cards count them. ``--left-of X`` also
counts the frames with a car box at score >= 0.5 that ends left of source column X: on the shared
clip (``--left-of 500``) those lie on the concrete barrier and vegetation at the left edge (the
cards' "barrier boxes").
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path


def box_stats(path: Path, frames: int | None, width: int, height: int, giant: float,
              left_of: float | None = None) -> dict:
    per_label: Counter[str] = Counter()
    by_height: Counter[str] = Counter()
    giant_frames, giants, n, left_frames = 0, [], 0, 0
    with path.open() as f:
        for line in f:
            if frames is not None and n >= frames:
                break
            rec = json.loads(line)
            n += 1
            found = left = False
            for cam, rows in rec["cameras"].items():
                for r in rows:
                    per_label[r["label"]] += 1
                    x1, y1, x2, y2 = r["box"]
                    if r["label"] == "car" and r["score"] >= 0.5:
                        by_height["under_40px" if y2 - y1 < 40 else "40px_or_taller"] += 1
                        left |= left_of is not None and x2 < left_of
                    frac = max(0.0, x2 - x1) * max(0.0, y2 - y1) / (width * height)
                    if frac > giant:
                        found = True
                        giants.append({"frame": rec["frame"], "camera": cam, "label": r["label"],
                                       "score": r["score"], "area_fraction": round(frac, 3)})
            giant_frames += found
            left_frames += left
    out = {"frames": n, "boxes_per_frame": {k: round(v / max(n, 1), 2) for k, v in sorted(per_label.items())},
           "car_boxes_per_frame_at_0.5_by_height": {k: round(by_height[k] / max(n, 1), 2)
                                                    for k in ("under_40px", "40px_or_taller")},
           "frames_with_giant_box": giant_frames, "giant_fraction": giant, "giant_boxes": giants}
    if left_of is not None:
        out["frames_with_car_box_left_of"] = {"x": left_of, "frames": left_frames}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("detections", type=Path, help="detections.jsonl of `perception run`")
    ap.add_argument("--frames", type=int, default=None, help="only the first N frames")
    ap.add_argument("--width", type=int, default=1280, help="source image width (px)")
    ap.add_argument("--height", type=int, default=720, help="source image height (px)")
    ap.add_argument("--giant", type=float, default=0.1, help="area fraction above which a box counts as giant")
    ap.add_argument("--left-of", type=float, default=None,
                    help="also count frames with a car box (score >= 0.5) ending left of this column")
    a = ap.parse_args()
    s = box_stats(a.detections, a.frames, a.width, a.height, a.giant, a.left_of)
    print(json.dumps({k: v for k, v in s.items() if k != "giant_boxes"}, indent=2))
    for g in s["giant_boxes"]:
        print(f"  frame {g['frame']:4d} {g['camera']}: {g['label']} score {g['score']:.2f}, "
              f"{100 * g['area_fraction']:.0f} % of the image")


if __name__ == "__main__":
    main()
