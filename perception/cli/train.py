"""`perception train --config FILE [--resume]`: train a model from a YAML config."""

from __future__ import annotations

import logging
from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from perception.cli.app import app, console, fail, setup_logging


@app.command("train", help="Train a model from a config file (see models/configs/); resumable.")
def train_command(
    config: Path = typer.Option(..., "--config", "-c", help="Training config YAML."),
    resume: bool = typer.Option(False, "--resume", help="Continue from OUT/last.ckpt (exactly)."),
    steps: int = typer.Option(None, help="Override the number of steps."),
    out: Path = typer.Option(None, help="Override the output folder."),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    from perception.train import TrainConfig, train

    setup_logging(verbose)
    try:
        cfg = TrainConfig.load(config)
    except ValueError as exc:
        fail(str(exc))
    if steps is not None:
        cfg.steps = steps
    if out is not None:
        cfg.out = str(out)
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TimeRemainingColumn(), TextColumn("{task.fields[info]}"))
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task(f"train {cfg.model}", total=cfg.steps, info="", visible=False)
        render_task = bar.add_task("render synthetic data", total=None, info="", visible=False)

        def on_render(done: int, total: int) -> None:
            bar.update(render_task, completed=done, total=total, visible=True)

        def on_log(row: dict) -> None:
            bar.update(task, completed=row["step"], visible=True,
                       info=f"loss {row['loss']:.3f} cls {row.get('cls', 0):.3f} box {row.get('box', 0):.3f} "
                            f"depth {row.get('depth', 0):.3f} | {row['img_per_s']:.1f} img/s")

        try:
            result = train(cfg, resume=resume, progress=on_log, data_progress=on_render)
        except (ValueError, FileNotFoundError) as exc:
            logging.getLogger(__name__).debug("training failed", exc_info=True)
            fail(str(exc))
    console.print(f"outputs in {result}: {cfg.model}.safetensors (train form, EMA; fused on load for "
                  "deployment), last.ckpt (resume), log.csv")
