"""`perception eval`: Evaluate a model on synth / KITTI / nuScenes / video."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from perception.cli.app import app, console, fail, register_backends, register_model_formats, setup_logging


def _parse_size(size: str) -> tuple[int, int]:
    from perception.geometry.resize import parse_size

    try:
        return parse_size(size)
    except ValueError as exc:
        fail(f"--size: {exc}")

@app.command("eval", help="Evaluate a model on synth / KITTI / nuScenes / video: metrics.json, report.md, plots.")
def eval_command(
    model: str = typer.Option(..., "--model", "-m", help="Registered model name (shipped weights), checkpoint path, "
                              "Deep Compression .pdc file, an exported .onnx file (fp32 or INT8; ONNX Runtime), or "
                              "teacher:PATH (the YOLOX COCO teacher as a 2D-only reference)."),
    dataset: str = typer.Option(..., "--dataset", "-d", help="synth, kitti, nuscenes or video."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (metrics.json, report.md, plots)."),
    data: Path = typer.Option(None, "--data", help="Dataset folder (kitti, nuscenes) or video/image path (video)."),
    seed: int = typer.Option(90000, "--seed", "-s",
                             help="Synthetic split seed (training uses 500-9999; keep evaluation seeds apart)."),
    frames: int = typer.Option(None, "--frames", "-n", help="Frames to evaluate (default: synth 20, others all)."),
    backend: str = typer.Option("torch", "--backend",
                                help="torch (fused network), torch-train (unfused train form) or onnx (ONNX Runtime)."),
    size: str = typer.Option("auto", "--size", help="Network input HxW (same resize/crop as training); auto: "
                             "synth 256x448, other datasets the size `perception run` picks for the first camera."),
    score_thresh: float = typer.Option(0.05, "--score-thresh", help="Keep detections above this score."),
    rig: str = typer.Option("surround6", "--rig", help="Synthetic rig: built-in name or YAML."),
    calib: Path = typer.Option(None, "--calib", help="Video: camera/rig YAML (e.g. data/rigs/dashcam_1280x720.yaml)."),
    random_weights: bool = typer.Option(False, "--random-weights",
                                        help="Allow a registered model without shipped weights (plumbing tests)."),
    teacher: Path = typer.Option(None, "--teacher",
                                 help="Reference COCO detector (YOLOX ONNX, e.g. $SHARED_DATA/weights/yolox_nano.onnx):"
                                      " report how often our model finds the cars it finds (for unlabelled video)."),
    agree_score: float = typer.Option(0.3, "--agree-score",
                                      help="With --teacher: our car boxes count as finding a teacher car at score"
                                           " >= this."),
    teacher_tiles: bool = typer.Option(False, "--teacher-tiles",
                                       help="With --teacher: run it on the image and 2x2 tiles, so distant cars it "
                                            "misses at its 416-px input count as teacher vehicles too."),
    ground_gate: bool = typer.Option(True, "--ground-gate/--no-ground-gate",
                                     help="Count only the detections `perception run` shows: drop those that "
                                          "lift to no distance or float above the ground, as run does by default."),
    qualitative: int = typer.Option(6, "--qualitative", help="Camera images in the qualitative grid."),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    setup_logging(verbose)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
        TimeRemainingColumn

    from perception.eval import EvalError, EvalOptions, TeacherPredictor, evaluate, make_backend_predictor, \
        onnx_file_predictor, open_dataset
    from perception.eval.datasets import resolve_size
    from perception.eval.report import write_metrics, write_report
    from perception.nn import ModelLoadError, resolve_model

    register_backends()  # --backend onnx and .onnx files run on the deploy layer's ONNX Runtime backend
    hw = None if size == "auto" else _parse_size(size)
    if not 0.0 <= score_thresh < 1.0:
        fail(f"--score-thresh must be in [0, 1), got {score_thresh}")
    if frames is not None and frames < 1:
        fail(f"--frames must be at least 1, got {frames}")
    if backend not in ("torch", "torch-train", "onnx"):
        fail(f"--backend must be torch, torch-train or onnx, got {backend!r}")
    if qualitative < 0:
        fail("--qualitative must be >= 0")
    if not score_thresh <= agree_score < 1.0:
        fail(f"--agree-score must be in [--score-thresh, 1), got {agree_score}")
    opts = EvalOptions(dataset=dataset, data=data, seed=seed, frames=frames, size=hw, score_thresh=score_thresh,
                       rig=rig, calib=calib, qualitative=qualitative, teacher=teacher,
                       agree_score=agree_score, teacher_tiles=teacher_tiles, ground_gate=ground_gate)
    t0 = time.perf_counter()
    try:
        samples, n, dense = open_dataset(opts)
        opts, samples = resolve_size(opts, samples)  # before the model: an .onnx file must match it
        hw = opts.size
        if model.startswith("teacher:"):
            if backend != "torch":
                fail("--model teacher:PATH runs the COCO teacher in ONNX Runtime; it takes no --backend")
            backend, desc = "onnxruntime", f"COCO teacher {model[len('teacher:'):]} (2D only)"
            predictor = TeacherPredictor(model[len("teacher:"):], score_thresh=score_thresh)
        elif model.endswith(".onnx"):
            if backend == "torch-train":
                fail("an .onnx file is the fused network: --backend torch-train needs a train-form checkpoint")
            backend, desc = "onnx", model
            predictor = onnx_file_predictor(model, hw, score_thresh=score_thresh, iou_thresh=opts.iou_thresh,
                                            max_det=opts.max_det)
        else:
            register_model_formats()  # --model FILE.pdc and the other compressed files
            try:
                net = resolve_model(model, random_weights=random_weights)
            except ModelLoadError as exc:
                raise EvalError(str(exc)) from None
            desc = str(net.source)
            predictor = make_backend_predictor(net, backend, model, score_thresh=score_thresh,
                                               iou_thresh=opts.iou_thresh, max_det=opts.max_det)
        meta = {"model": desc, "backend": backend, "data": str(data) if data is not None else None}
        with Progress(TextColumn("[bold]eval[/]"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      TimeRemainingColumn(), console=console) as prog:
            task = prog.add_task("frames", total=n)
            result = evaluate(predictor, samples, opts, num_frames=n, dense_depth=dense, meta=meta,
                              progress=lambda i, total: prog.update(task, completed=i, total=total))
    except EvalError as exc:
        fail(str(exc))
    except (ValueError, OSError) as exc:  # reader / calibration / checkpoint problems
        fail(f"{type(exc).__name__}: {exc}")
    try:
        write_metrics(result.metrics, out / "metrics.json")
        write_report(result, out, title=f"Evaluation of {desc} on {dataset}")
    except OSError as exc:
        fail(f"--out {out}: {exc}")
    m = result.metrics
    parts = [f"{m['frames']} frames"]
    if "detection" in m:
        parts.append(f"mAP50 {_pct(m['detection'].get('map50'))}, COCO mAP {_pct(m['detection'].get('coco_map'))}")
    if "depth" in m:
        parts.append(f"abs_rel {m['depth']['abs_rel']:.3f}")
    if "bev" in m and m["bev"].get("center_map") is not None:
        parts.append(f"BEV centre mAP {_pct(m['bev']['center_map'])}")
    ta = m.get("teacher_agreement", {})
    if ta.get("car_found_rate") is not None:
        parts.append(f"cars found in {_pct(ta['car_found_rate'])} of {ta['images_with_reference_car']} images "
                     f"where the teacher finds one")
    if ta.get("unmatched_vehicle_boxes_per_image") is not None:
        parts.append(f"{ta['unmatched_vehicle_boxes_per_image']} of {ta['vehicle_boxes_per_image']} vehicle "
                     f"boxes/image match no teacher vehicle ({ta['unmatched_vehicle_boxes_per_image_40px']} of those >= "
                     f"{ta['rule']['reference_min_height_px']:g} px tall)")
    console.print(f"{'; '.join(parts)} -> {out}/metrics.json, report.md ({time.perf_counter() - t0:.1f} s)",
                  highlight=False)


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.1f}%"
