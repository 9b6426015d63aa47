"""`perception demo`: the whole pipeline on the embedded synthetic six-camera drive.

Settings (rig, model, network size, BEV range, display layout) come from ``demo/demo.yaml``;
the drive itself is ``data/sample_drive/`` (rendered by ``perception synth``).
"""

from __future__ import annotations

from pathlib import Path

import typer

from perception.cli.app import app, console, fail, setup_logging
from perception.cli.run import execute, pipeline_options

ROOT = Path(__file__).resolve().parents[2]
DEMO_CONFIG = ROOT / "demo" / "demo.yaml"


@app.command("demo", help="Run the whole pipeline on the embedded synthetic six-camera drive (no arguments needed).")
def demo_command(
    out: Path = typer.Option(Path("runs/demo"), "--out", "-o", help="Output folder."),
    config: Path = typer.Option(DEMO_CONFIG, "--config", help="Demo settings (rig, model, size, BEV, layout)."),
    model: str = typer.Option(None, "--model", "-m", help="Model name or checkpoint (default: from the config)."),
    backend: str = typer.Option("torch", "--backend", help="torch, torch-compile, cuda-graph, onnx or tensorrt."),
    precision: str = typer.Option("auto", "--precision", help="auto (bf16 on CPUs with native bf16, fp16 on CUDA), "
                                  "fp32, bf16 or fp16."),
    score_thresh: float = typer.Option(0.5, "--score-thresh", help="Detections kept for display, lifting and "
                                       "tracking."),
    show: bool = typer.Option(False, "--show", help="Open an OpenCV window (needs a GUI OpenCV build)."),
    serve: int = typer.Option(None, "--serve", help="Serve the live view on http://127.0.0.1:PORT/."),
    max_frames: int = typer.Option(None, "--max-frames", "-n", help="Stop after N frames."),
    size: str = typer.Option(None, "--size", help="Network input HxW (default: from the config)."),
    device: str = typer.Option("auto", "--device", help="cpu, cuda or auto."),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    setup_logging(verbose)
    from perception.geometry import CalibrationError
    from perception.pipeline.runner import build_rig
    from perception.utils.yaml_io import YAMLInputError, load_yaml

    if not config.is_file():
        fail(f"{config}: demo config not found")
    try:
        cfg = load_yaml(config) or {}
    except YAMLInputError as exc:
        fail(str(exc))
    rig_path = (config.parent / cfg.get("rig", "../data/sample_drive/rig.yaml")).resolve()
    if not rig_path.is_file():
        fail(f"{rig_path} not found: the sample drive is rendered by `perception synth` into data/sample_drive/")
    try:
        rig, sources = build_rig(rig_path)
    except CalibrationError as exc:
        fail(str(exc))
    display = dict(cfg.get("display") or {})
    layout = display.get("layout")
    if layout and any(n not in rig.names for row in layout for n in row):
        console.print(f"[yellow]demo layout names cameras not in the rig ({rig.names}); using rig order[/]")
        display.pop("layout")
    opts = pipeline_options(model=model or cfg.get("model", "rep-s"), backend=backend, out=out, show=show,
                            serve=serve, max_frames=max_frames, size=size or cfg.get("size"), device=device,
                            precision=precision, score_thresh=score_thresh,
                            extra={"bev": cfg.get("bev"), "display": display})
    execute(rig, sources, opts, "demo")
