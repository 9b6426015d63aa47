"""Pictures of a synthetic frame and its ground truth: camera mosaic (with 2D boxes), depth
colour map, BEV ground truth. ``python -m perception.data.synth.preview --out docs/images``
renders the documentation pictures.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from perception.data.classes import CLASSES
from perception.data.sample import Sample

LAYOUT_6 = [["front_left", "front", "front_right"], ["back_left", "back", "back_right"]]
CLASS_COLORS = {0: (255, 200, 0), 1: (255, 120, 0), 2: (200, 60, 255), 3: (0, 220, 255), 4: (80, 255, 80)}


def _grid(sample: Sample, tiles: list[np.ndarray]) -> np.ndarray:
    names = sample.camera_names
    layout = LAYOUT_6 if all(n in names for row in LAYOUT_6 for n in row) else [names]
    rows = [np.concatenate([tiles[names.index(n)] for n in row], 1) for row in layout]
    return np.concatenate(rows, 0)


def mosaic(sample: Sample, boxes: bool = False) -> np.ndarray:
    """RGB mosaic of the cameras (nuScenes-like 2x3 layout for six cameras)."""
    tiles = []
    for i, img in enumerate(sample.images):
        t = img.copy()
        if boxes and sample.boxes2d is not None:
            b = sample.boxes2d[i]
            for k in range(len(b)):
                if b.ignore is not None and b.ignore[k]:
                    continue
                x0, y0, x1, y1 = (int(round(v)) for v in b.boxes[k])
                cv2.rectangle(t, (x0, y0), (x1 - 1, y1 - 1), CLASS_COLORS.get(int(b.labels[k]), (255, 255, 255)), 1)
        tiles.append(t)
    return _grid(sample, tiles)


def depth_mosaic(sample: Sample, max_depth: float = 80.0) -> np.ndarray:
    """Inverse-depth colour map (turbo), black where depth is invalid (sky)."""
    tiles = []
    for d in sample.depth:
        inv = np.where(d > 0, np.clip(2.0 / np.maximum(d, 1e-3), 0, 1), 0)   # 2 m -> 1, far -> 0
        c = cv2.applyColorMap((inv ** 0.6 * 255).astype(np.uint8), cv2.COLORMAP_TURBO)
        c[d <= 0] = 0
        tiles.append(cv2.cvtColor(c, cv2.COLOR_BGR2RGB))
    return _grid(sample, tiles)


def bev_image(sample: Sample, scale: int = 2) -> np.ndarray:
    """BEV ground truth: drivable grey, lane paint white, static obstacles brown, objects by class."""
    bev = sample.extras["bev"]
    h, w = bev["drivable"].shape
    img = np.full((h, w, 3), (34, 60, 30), np.uint8)
    img[bev["drivable"] > 0] = (70, 70, 74)
    img[bev["lanes"] > 0] = (235, 235, 235)
    img[bev["occupancy"] == 1] = (120, 80, 50)
    cls = bev.get("classes")
    if cls is not None:
        for k, col in CLASS_COLORS.items():
            img[cls == k] = col
    cy, cx = h // 2, w // 2
    res = bev["resolution"]
    # ego footprint: origin under the rear axle, 4.6 x 1.85 m
    x0, x1 = cx - int(0.92 / res), cx + int(0.92 / res)
    y0, y1 = cy - int(3.6 / res), cy + int(1.0 / res)
    cv2.rectangle(img, (x0, y0), (x1, y1), (255, 60, 60), -1)
    img = cv2.resize(img, (w * scale, h * scale), interpolation=cv2.INTER_NEAREST)
    return img


def legend_bar(width: int) -> np.ndarray:
    bar = np.full((22, width, 3), 255, np.uint8)
    x = 6
    for k, name in enumerate(CLASSES):
        cv2.rectangle(bar, (x, 6), (x + 12, 16), CLASS_COLORS[k], -1)
        cv2.putText(bar, name, (x + 16, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
        x += 20 + 9 * len(name)
    return bar


def _render(seed: int, scenery: str | None, weather: str | None, tod: str | None, steps: int, w: int, h: int) -> Sample:
    from perception.data.synth import Renderer, World, WorldConfig, make_surround6
    world = World(seed, WorldConfig(scenery=scenery, weather=weather, time_of_day=tod, duration=steps / 10 + 2))
    for _ in range(steps):
        world.step(0.1)
    return Renderer(make_surround6().scaled(w, h))(world)


def _draw_boxes(img, sample: Sample) -> None:
    """Draw 2D boxes (palette indices 250 + class) onto the quantised mosaic in place."""
    from PIL import ImageDraw
    draw = ImageDraw.Draw(img)
    names = sample.camera_names
    cam0 = sample.cameras[0]
    layout = LAYOUT_6 if all(n in names for row in LAYOUT_6 for n in row) else [names]
    for r, row in enumerate(layout):
        for c, name in enumerate(row):
            b = sample.boxes2d[names.index(name)]
            for k in range(len(b)):
                if b.ignore is not None and b.ignore[k]:
                    continue
                x0, y0, x1, y1 = (float(v) for v in b.boxes[k])
                ox, oy = c * cam0.width, r * cam0.height
                draw.rectangle([ox + x0, oy + y0, ox + x1 - 1, oy + y1 - 1], outline=250 + int(b.labels[k]))
    # legend swatches use the exact colours too
    y = len(layout) * cam0.height
    x = 6
    for k, name in enumerate(CLASSES):
        draw.rectangle([x, y + 6, x + 12, y + 16], fill=250 + k)
        x += 20 + 9 * len(name)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Render the synthetic-world documentation pictures.")
    ap.add_argument("--out", default="docs/images")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--steps", type=int, default=20, help="10 Hz steps before the pictured frame")
    ap.add_argument("--size", default="256x448")
    ap.add_argument("--scenery", default=None)
    ap.add_argument("--weather", default=None)
    ap.add_argument("--time-of-day", default=None)
    args = ap.parse_args(argv)
    from PIL import Image
    h, w = (int(v) for v in args.size.split("x"))
    s = _render(args.seed, args.scenery, args.weather, args.time_of_day, args.steps, w, h)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    m = mosaic(s, boxes=False)
    m = np.concatenate([m, legend_bar(m.shape[1])], 0)
    # a 250-colour palette keeps the picture small enough for the docs (< 400 KB); the box
    # colours get their own palette entries so they stay exact
    q = Image.fromarray(m).quantize(250, dither=Image.Dither.NONE)
    pal = q.getpalette()[:250 * 3]
    for k in range(5):
        pal += list(CLASS_COLORS[k])
    q.putpalette(pal + [0, 0, 0] * (256 - 255))
    _draw_boxes(q, s)
    q.save(out / "synth_cameras.png", optimize=True)
    night = Image.fromarray(mosaic(_render(args.seed + 100, "urban", "clear", "night", args.steps, w, h)))
    rain = Image.fromarray(mosaic(_render(args.seed + 200, "suburban", "rain", "dusk", args.steps, w, h)))
    strip = np.concatenate([np.asarray(night)[:h], np.asarray(rain)[:h]], 0)[:, : 2 * w]
    Image.fromarray(strip).quantize(256, dither=Image.Dither.NONE).save(out / "synth_weather.png", optimize=True)
    Image.fromarray(depth_mosaic(s)).save(out / "synth_depth.png", optimize=True)
    Image.fromarray(bev_image(s)).save(out / "synth_bev.png", optimize=True)


if __name__ == "__main__":
    main()
