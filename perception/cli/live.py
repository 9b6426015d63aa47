"""`perception live`: the pipeline live on a camera (webcam, V4L2, CSI via GStreamer, stream)."""

from __future__ import annotations

from pathlib import Path

import typer

from perception.cli.app import app, setup_logging
from perception.cli.run import execute, pipeline_options, single_camera_rig


@app.command("live", help="Run the pipeline live on a camera; watch with --show or --serve PORT.")
def live_command(
    camera: str = typer.Option("0", "--camera", help="Camera index, /dev/videoN, rtsp:// URL or GStreamer pipeline."),
    calib: Path = typer.Option(None, "--calib", "-c", help="Calibration YAML (default: 60 deg HFOV at 1.4 m)."),
    model: str = typer.Option("rep-s", "--model", "-m", help="Registered model name or checkpoint path."),
    backend: str = typer.Option("torch", "--backend", help="torch, torch-compile, cuda-graph, onnx or tensorrt."),
    precision: str = typer.Option("auto", "--precision", help="auto (bf16 on CPUs with native bf16, fp16 on CUDA), "
                                  "fp32, bf16 or fp16."),
    score_thresh: float = typer.Option(0.5, "--score-thresh", help="Detections kept for display, lifting and "
                                       "tracking."),
    out: Path = typer.Option(Path("runs/live"), "--out", "-o", help="Output folder."),
    show: bool = typer.Option(False, "--show", help="Open an OpenCV window (needs a GUI OpenCV build)."),
    serve: int = typer.Option(None, "--serve", help="Serve the live view on http://127.0.0.1:PORT/."),
    max_frames: int = typer.Option(None, "--max-frames", "-n", help="Stop after N frames (default: Ctrl-C)."),
    size: str = typer.Option(None, "--size", help="Network input HxW (multiples of 32)."),
    device: str = typer.Option("auto", "--device", help="cpu, cuda or auto."),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    setup_logging(verbose)
    opts = pipeline_options(model=model, backend=backend, out=out, show=show, serve=serve, max_frames=max_frames,
                            size=size, device=device, precision=precision, score_thresh=score_thresh)
    execute(single_camera_rig(camera, calib, None), [camera], opts, "live")
