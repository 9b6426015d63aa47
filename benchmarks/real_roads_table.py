"""One Markdown table row per folder written by ``benchmarks/real_roads.sh``, with the issue's targets.

    python benchmarks/real_roads_table.py runs/real-roads/rep-s runs/real-roads/candidate
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

HEADER = ("| model | synth map50 | nuScenes car AP50 | nuScenes abs_rel | nuScenes distance (median, mean err) "
          "| KITTI car AP50 | KITTI abs_rel | KITTI distance | dashcam found / unmatched per frame (calibrated) "
          "| (uncalibrated) |")
TARGET = ("| target | >= shipped - 0.02 | >= teacher (0.255) | <= 0.25 | within 10 % | | <= 0.25 | within 10 % "
          "| >= 95 % / <= 0.3 | >= 95 % / <= 0.3 |")


def _metrics(folder: Path, name: str) -> dict:
    """``OUT/NAME/metrics.json`` as real_roads.sh writes it, or ``NAME-metrics.json`` as kept in docs/benchmarks/."""
    for path in (folder / name / "metrics.json", folder / f"{name}-metrics.json"):
        if path.is_file():
            return json.loads(path.read_text())
    return {}


def _distance(path: Path) -> str:
    """The distance `perception run` reports ("chosen") against the truth: median ratio and mean error."""
    if not path.is_file():
        return "–"
    m = re.search(r"chosen: median ratio ([\d.]+), mean \|rel err\| ([\d.]+) \(n=(\d+)\)", path.read_text())
    return f"{m.group(1)}x, {m.group(2)} (n={m.group(3)})" if m else "–"


def _dashcam(path: Path) -> str:
    if not path.is_file():
        return "–"
    d = json.loads(path.read_text())
    return f"{100 * d['teacher_car_found_rate']:.0f} % / {d['unmatched_vehicle_boxes_per_frame']:.2f}"


def row(folder: Path) -> str:
    syn, nus, kit = (_metrics(folder, k) for k in ("synth", "nuscenes", "kitti"))

    def get(m: dict, *keys: str) -> str:
        for k in keys:
            m = m.get(k, {}) if isinstance(m, dict) else {}
        return f"{m:.3f}" if isinstance(m, (int, float)) else "–"

    return (f"| {folder.name} | {get(syn, 'detection', 'map50')} | {get(nus, 'detection', 'ap50', 'car')} "
            f"| {get(nus, 'depth', 'abs_rel')} | {_distance(folder / 'distance-nuscenes.txt')} "
            f"| {get(kit, 'detection', 'ap50', 'car')} | {get(kit, 'depth', 'abs_rel')} "
            f"| {_distance(folder / 'distance-kitti.txt')} | {_dashcam(folder / 'dashcam-calibrated.json')} "
            f"| {_dashcam(folder / 'dashcam-uncalibrated.json')} |")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    print(HEADER)
    print("|" + "---|" * HEADER.count(" | ") + "---|")
    print(TARGET)
    for f in sys.argv[1:]:
        print(row(Path(f)))
