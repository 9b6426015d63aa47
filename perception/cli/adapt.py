"""`perception adapt --source VIDEO|FOLDER --out DIR`: fine-tune a model to your own camera."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import typer

from perception.cli.app import app, console, fail, setup_logging


@app.command("adapt", help="Fine-tune a model to your own camera from unlabelled footage (teacher pseudo-labels + "
                           "self-supervised depth); writes a model for `run --model` and a before/after report.")
def adapt_command(
    source: str = typer.Option(..., "--source", "-s", help="Your footage: a video file, an image folder or a glob."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (model.safetensors, report.md, checkpoints)."),
    model: str = typer.Option("rep-s", "--model", "-m", help="Registered model name or a train-form checkpoint."),
    calib: Path = typer.Option(None, "--calib", help="Camera YAML (default: <video>.yaml beside it, else the "
                               "60-degree default with the mount measured on the lane lines, as `run`)."),
    size: str = typer.Option(None, "--size", help="Network input HxW (default: what `perception run` picks)."),
    steps: int = typer.Option(1200, "--steps", help="Fine-tuning steps."),
    batch: int = typer.Option(8, "--batch", help="Images per step (plus 2 self-supervised triplets)."),
    lr: float = typer.Option(1e-4, "--lr", help="Peak learning rate."),
    max_frames: int = typer.Option(2000, "--max-frames", help="Training frames taken from the footage (spread "
                                   "evenly over it, however long it is)."),
    max_heldout: int = typer.Option(300, "--max-heldout", help="Held-out frames for the report."),
    holdout: float = typer.Option(0.2, "--holdout", help="Fraction of the footage held out (whole time blocks)."),
    synth_frames: int = typer.Option(600, "--synth-frames", help="Synthetic frames rendered through your camera "
                                     "and mixed in, so 3D boxes and metric depth do not drift (0: none)."),
    blur_consistency: float = typer.Option(0.0, "--blur-consistency", help="Weight of the blur-consistency depth "
                                           "term on your frames (docs/training.md, 'Config'). Off by default: "
                                           "it kept other cameras' depth but made yours drift near (docs/adapt.md)."),
    teacher: Path = typer.Option(None, "--teacher", help="COCO teacher ONNX (default: "
                                 "$PERCEPTION_SHARED_DATA/weights/yolox_nano.onnx)."),
    seed: int = typer.Option(0, "--seed"),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run in --out (exactly)."),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    setup_logging(verbose)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
        TimeRemainingColumn

    from perception.adapt import AdaptOptions, adapt
    from perception.geometry.camera import CalibrationError
    from perception.geometry.resize import parse_size
    from perception.nn import ModelLoadError
    from perception.utils.image_io import DataError

    if steps < 1 or batch < 1 or max_frames < 1 or max_heldout < 1 or synth_frames < 0:
        fail("--steps, --batch, --max-frames and --max-heldout must be at least 1, --synth-frames at least 0")
    if not (math.isfinite(blur_consistency) and blur_consistency >= 0):
        fail(f"--blur-consistency must be a weight >= 0, got {blur_consistency}")
    if not 0.0 < holdout < 1.0:
        fail(f"--holdout must be a fraction in (0, 1), got {holdout}")
    if not 0.0 < lr < 1.0:
        fail(f"--lr must be in (0, 1), got {lr}")
    try:
        hw = parse_size(size) if size else None
    except ValueError as exc:
        fail(f"--size: {exc}")
    opts = AdaptOptions(source=source, out=out, model=model, calib=str(calib) if calib else None, size=hw,
                        steps=steps, batch=batch, lr=lr, max_frames=max_frames, max_heldout=max_heldout,
                        holdout=holdout, synth_frames=synth_frames, blur_consistency=blur_consistency,
                        seed=seed)
    if teacher is not None:
        opts.teacher = str(teacher)
    columns = (TextColumn("[bold]{task.description:>16}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TimeRemainingColumn(), TextColumn("{task.fields[info]}"))
    with Progress(*columns, console=console) as bar:
        tasks: dict[str, int] = {}

        def on_progress(stage: str, done: int, total: int, info: str) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total, info="")
            bar.update(tasks[stage], completed=done, total=total, info=info)

        try:
            result = adapt(opts, resume=resume, progress=on_progress)
        except (ValueError, FileNotFoundError, ModelLoadError, CalibrationError, DataError) as exc:
            logging.getLogger(__name__).debug("adapt failed", exc_info=True)
            fail(str(exc))
    assert result is not None
    console.print(result.report_md.read_text(), highlight=False, markup=False)
    console.print(f"model: {result.model_path}\nreport: {result.report_md}\nrun it: {result.run_command}",
                  highlight=False, markup=False)
