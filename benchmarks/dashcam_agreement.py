"""Agreement with the COCO teacher on real video, and the vehicle boxes it does not explain.

    python benchmarks/dashcam_agreement.py [--model rep-s] [--video $SHARED/dashcam/test_video.mp4]
        [--calib FILE] [--frames N] [--size auto] [--sheet-frames 30] [--out DIR] [--teacher-tiles]
        [--no-ground-gate]

Runs ``perception eval --dataset video --teacher $SHARED/weights/yolox_nano.onnx`` (the same
code: :func:`perception.eval.evaluate`, whose preprocessing is that of ``perception run``, and
whose ``--size auto`` is run's size) and prints a JSON with the teacher-car found rate (frames
where the teacher has a car >= 0.5 and >= 40 px tall and we find one), car recall, and our
vehicle boxes (car, truck, bus) at score >= 0.3 per frame: all of them, and those matching no
teacher vehicle (score >= 0.3, IoU >= 0.5), also only those >= 40 px tall (definitions:
:mod:`perception.eval.agreement`). For checking by eye it writes ``--sheet-frames`` frames spread
over the clip into ``--out``: teacher vehicles green, our matched boxes blue, our unmatched
vehicle boxes red (with scores), the evaluated crop grey; and all of them on ``sheet.jpg``.
``--teacher-tiles`` makes the reference the teacher on the whole image plus 2x2 tiles (it then
sees distant cars it misses at its 416-px input): a check of how many unmatched boxes are real
distant cars, not the issue's reference, which is the whole-image teacher.
Our boxes are those ``perception run`` shows: detections that lift to no distance or float above
the ground are dropped as in the pipeline (``--no-ground-gate`` counts every detection; docs/benchmarks.md
section 8 says which figures were measured without the gate).
``$SHARED`` is ``$PERCEPTION_SHARED_DATA``, default ``../shared/data`` next to the repository.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Iterable, Iterator

import cv2
import numpy as np

import perception.compress  # noqa: F401  (registers the compressed model formats)
from perception.data.sample import Sample
from perception.eval import EvalError, EvalOptions, evaluate, open_dataset
from perception.eval.agreement import AgreementCounter
from perception.eval.datasets import resolve_size
from perception.geometry.resize import parse_size
from perception.nn import ModelLoadError, resolve_model

SHARED = Path(os.environ.get("PERCEPTION_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
GREEN, BLUE, RED, GREY = (0, 200, 0), (255, 128, 0), (0, 0, 255), (160, 160, 160)  # BGR


class RecordingCounter(AgreementCounter):
    """The evaluation's counter, also keeping the boxes of the images ``keep`` names (by index)."""

    def __init__(self, keep: set[int], **kwargs) -> None:
        super().__init__(**kwargs)
        self.keep, self.records = keep, {}

    def add(self, pred_boxes, pred_scores, pred_is_car, ref_boxes, ref_scores, ref_is_car, window=None, *,
            pred_is_vehicle=None, ref_is_vehicle=None):
        if self.images in self.keep:
            counted, matched = self.match_vehicles(pred_boxes, pred_scores, pred_is_vehicle, ref_boxes, ref_scores,
                                                   ref_is_vehicle, window)
            teacher = np.asarray(ref_is_vehicle, bool) & (np.asarray(ref_scores) >= self.vehicle_ref_score)
            self.records[self.images] = {
                "ours": np.asarray(pred_boxes).reshape(-1, 4)[counted], "scores": np.asarray(pred_scores)[counted],
                "matched": matched[counted], "teacher": np.asarray(ref_boxes).reshape(-1, 4)[teacher],
                "teacher_scores": np.asarray(ref_scores)[teacher], "window": window}
        return super().add(pred_boxes, pred_scores, pred_is_car, ref_boxes, ref_scores, ref_is_car, window,
                           pred_is_vehicle=pred_is_vehicle, ref_is_vehicle=ref_is_vehicle)


def keep_images(samples: Iterable[Sample], keep: set[int], store: dict[int, np.ndarray]) -> Iterator[Sample]:
    """``samples`` unchanged, storing the first camera image of the frames ``keep`` names."""
    for i, s in enumerate(samples):
        if i in keep:
            store[i] = s.images[0]
        yield s


def draw(image_rgb: np.ndarray, rec: dict, title: str) -> np.ndarray:
    img = cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR)

    def box(b, color, text, thick=2, below=False):
        x1, y1, x2, y2 = (int(round(v)) for v in b)
        cv2.rectangle(img, (x1, y1), (x2, y2), color, thick)
        if text:
            y = y2 + 16 if below else max(y1 - 5, 14)
            cv2.putText(img, text, (x1, y), cv2.FONT_HERSHEY_SIMPLEX, 0.5, color, 2 if thick > 1 else 1)

    if rec["window"] is not None:
        box(rec["window"], GREY, "", 1)
    for b, s in zip(rec["teacher"], rec["teacher_scores"]):
        box(b, GREEN, f"{s:.2f}", 1, below=True)
    for b, s, m in zip(rec["ours"], rec["scores"], rec["matched"]):
        box(b, BLUE if m else RED, f"{s:.2f}")
    cv2.putText(img, title, (10, 45), cv2.FONT_HERSHEY_SIMPLEX, 1.4, (255, 255, 255), 3)
    return img


def contact_sheet(images: list[np.ndarray], cols: int = 5, width: int = 384) -> np.ndarray:
    h, w = images[0].shape[:2]
    th = int(round(h * width / w))
    tiles = [cv2.resize(im, (width, th), interpolation=cv2.INTER_AREA) for im in images]
    tiles += [np.zeros_like(tiles[0])] * (-len(tiles) % cols)
    return np.vstack([np.hstack(tiles[r:r + cols]) for r in range(0, len(tiles), cols)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="rep-s", help="registered model name or checkpoint path")
    ap.add_argument("--video", type=Path, default=SHARED / "dashcam" / "test_video.mp4")
    ap.add_argument("--calib", type=Path, default=None, help="camera YAML (default: perception run's policy)")
    ap.add_argument("--frames", type=int, default=None, help="only the first N frames")
    ap.add_argument("--size", default="auto", help="network input HxW, or auto (the size perception run picks)")
    ap.add_argument("--sheet-frames", type=int, default=30, help="annotated frames, spread over the clip")
    ap.add_argument("--out", type=Path, default=Path("runs/dashcam_agreement"))
    ap.add_argument("--teacher-tiles", action="store_true", help="reference: the teacher on the image and 2x2 tiles")
    ap.add_argument("--no-ground-gate", dest="ground_gate", action="store_false",
                    help="count every detection, also those perception run drops as floating above the ground")
    a = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    teacher = SHARED / "weights" / "yolox_nano.onnx"
    for path, what in ((a.video, "--video"), (teacher, "the teacher")):
        if not path.is_file():
            shared = (": the shared sample data is absent (set PERCEPTION_SHARED_DATA to its folder, default "
                      "../shared/data next to the repository)") if SHARED in path.parents else ""
            sys.exit(f"error: {what} {path} not found{shared}")
    t0 = time.perf_counter()
    try:
        size = None if a.size == "auto" else parse_size(a.size)
        opts = EvalOptions(dataset="video", data=a.video, calib=a.calib, frames=a.frames, size=size, teacher=teacher,
                           qualitative=0, teacher_tiles=a.teacher_tiles, ground_gate=a.ground_gate)
        samples, n, dense = open_dataset(opts)
        opts, samples = resolve_size(opts, samples)
        model = resolve_model(a.model)
        keep = set(np.linspace(0, n - 1, min(a.sheet_frames, n)).round().astype(int).tolist()) \
            if a.sheet_frames > 0 else set()
        counter = RecordingCounter(keep, ref_score=opts.teacher_score, min_height=opts.teacher_min_height,
                                   score=opts.agree_score)
        images: dict[int, np.ndarray] = {}
        ev = evaluate(model, keep_images(samples, keep, images), opts, num_frames=n, dense_depth=dense,
                      agreement=counter)
    except (EvalError, ModelLoadError, ValueError, OSError) as exc:
        sys.exit(f"error: {exc}")
    t = ev.metrics["teacher_agreement"]
    a.out.mkdir(parents=True, exist_ok=True)
    drawn = []
    for i in sorted(counter.records):
        rec = counter.records[i]
        title = f"frame {i}: {int((~rec['matched']).sum())} unmatched of {len(rec['ours'])}"
        drawn.append(draw(images[i], rec, title))
        cv2.imwrite(str(a.out / f"frame_{i:05d}.jpg"), drawn[-1], [cv2.IMWRITE_JPEG_QUALITY, 90])
    if drawn:
        cv2.imwrite(str(a.out / "sheet.jpg"), contact_sheet(drawn), [cv2.IMWRITE_JPEG_QUALITY, 85])
    print(json.dumps({
        "model": a.model, "video": str(a.video), "size": list(opts.size), "frames": ev.metrics["frames"],
        "teacher_car_found_rate": t["car_found_rate"], "frames_with_teacher_car": t["images_with_reference_car"],
        "car_recall": t["car_recall"],
        "unmatched_vehicle_boxes_per_frame": t["unmatched_vehicle_boxes_per_image"],
        "unmatched_vehicle_boxes_per_frame_40px": t["unmatched_vehicle_boxes_per_image_40px"],
        "vehicle_boxes_per_frame": t["vehicle_boxes_per_image"], "rule": {**t["rule"], "teacher_tiles": t["teacher_tiles"],
                                                          "ground_gate": ev.metrics["meta"]["ground_gate"]},
        "sheet": str(a.out / "sheet.jpg") if drawn else None, "seconds": round(time.perf_counter() - t0, 1)},
        indent=2))


if __name__ == "__main__":
    main()
