"""`perception run`: the pipeline on a video, image folder, camera, stream or a whole rig.

Also holds the option handling shared by ``perception demo`` and ``perception live``.
"""

from __future__ import annotations

import logging
import signal
from pathlib import Path
from typing import Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from perception.cli.app import app, console, fail, register_backends, register_model_formats, setup_logging

log = logging.getLogger("perception.cli.run")



def pipeline_options(*, model: str, backend: str, out: Path | None, show: bool, serve: int | None,
                     max_frames: int | None, size: str | None, device: str = "auto", render: bool = True,
                     threads: int | None = None, precision: str = "auto", score_thresh: float = 0.5,
                     extra: dict[str, Any] | None = None):
    """Validate the common options into :class:`PipelineOptions` (one-line errors)."""
    from perception.pipeline.bev import BEVConfig
    from perception.pipeline.render import RenderConfig
    from perception.geometry.resize import parse_size
    from perception.pipeline.runner import PipelineOptions

    register_backends()
    register_model_formats()  # --model FILE.pdc and the other compressed files
    if max_frames is not None and max_frames < 1:
        fail("--max-frames must be >= 1")
    if not 0.0 < score_thresh < 1.0:
        fail(f"--score-thresh must be in (0, 1), got {score_thresh}")
    if precision not in ("auto", "fp32", "bf16", "fp16"):
        fail(f"--precision must be auto, fp32, bf16 or fp16, got {precision!r}")
    if serve is not None and not (0 <= serve < 65536):
        fail(f"--serve: invalid port {serve}")
    net_size = None
    if size:
        try:
            net_size = parse_size(size)
        except ValueError as exc:
            fail(f"--size: {exc}")
    if show:
        from perception.pipeline.sinks import gui_available
        if not gui_available():
            fail("--show needs an OpenCV build with GUI support; this one has none (opencv-python-headless). "
                 "Install opencv-python, or use --serve PORT to watch in a browser")
    extra = dict(extra or {})
    try:
        bev = BEVConfig.from_dict(extra.pop("bev", None))
        display = RenderConfig.from_dict(extra.pop("display", None))
    except (TypeError, ValueError) as exc:
        fail(str(exc))
    return PipelineOptions(model=model, backend=backend, precision=precision, device=device, size=net_size,
                           out=out, show=show,
                           serve=serve, max_frames=max_frames, render=render, bev=bev, display=display,
                           threads=threads, score_thresh=score_thresh, **extra)


def execute(rig, sources: list, opts, title: str = "run") -> dict:
    """Build and run the pipeline with clean Ctrl-C / SIGTERM handling; print where outputs are."""
    from perception.geometry import CalibrationError
    from perception.pipeline.runner import Pipeline
    from perception.pipeline.sources import SourceError

    try:
        pipe = Pipeline(rig, sources, opts)
    except (ValueError, CalibrationError, SourceError, OSError) as exc:
        fail(str(exc))
    if pipe.server is not None:
        console.print(f"serving the live view on [bold]{pipe.server.url}[/] (stats: {pipe.server.url}stats.json)")

    signals: dict[str, int] = {"n": 0, "first": 0}

    def on_signal(signum, _frame) -> None:
        # Never raise from here: an exception in the main thread while the stage threads run
        # aborted the process (rc 134) and left the outputs unfinished. A second signal only
        # says so; the stop already drops queued frames and finalises the files.
        signals["n"] += 1
        if signals["n"] > 1:
            log.warning("%s again: already stopping, closing the outputs", signal.Signals(signum).name)
            return
        signals["first"] = signum
        log.warning("%s: stopping and finalising the outputs", signal.Signals(signum).name)
        pipe.interrupted = True
        pipe.stop()

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with Progress(TextColumn(f"[bold]{title}[/]"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[fps]}"),
                      TimeElapsedColumn(), console=console, transient=False) as progress:
            task = progress.add_task(title, total=opts.max_frames, fps="")

            def on_frame(i: int) -> None:
                total = opts.max_frames
                src = pipe.captures[0].source
                if total is None and not src.live and src.frame_count and not opts.loop:
                    total = src.frame_count
                progress.update(task, completed=pipe.engine.frames, total=total,
                                fps=f"{pipe.engine.live_stats()['fps']:.1f} fps")

            summary = pipe.run(progress=on_frame)
    except (CalibrationError, SourceError, RuntimeError, OSError) as exc:  # OSError: an output not writable
        fail(str(exc).splitlines()[0])
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        pipe.close()
    lat = summary["latency_ms"]
    console.print(f"{summary['frames']} frames, {summary['fps']:.1f} frames/s end to end ({summary['device']}, "
                  f"{summary['model']}, backend {summary['backend']}); median ms: "
                  + ", ".join(f"{k} {v:.0f}" for k, v in lat.items()), highlight=False)
    if summary["dropped_frames"] or summary["errors"]:
        console.print(f"dropped frames: {summary['dropped_frames']}, errors: {summary['errors']}", highlight=False)
    if opts.out is not None:
        from perception.pipeline.runner import OUTPUT_FILES

        present = [n for n in OUTPUT_FILES if (Path(opts.out) / n).exists()]
        console.print(f"outputs in [bold]{Path(opts.out).resolve()}[/]: {', '.join(present)}")
    if signals["first"]:  # interrupted: the outputs are complete, but the run is not
        raise typer.Exit(128 + signals["first"])  # 130 for SIGINT, 143 for SIGTERM, as shells report
    if summary["frames"] == 0:
        fail("no frame was processed (no readable input)")
    return summary


def single_camera_rig(source: str, calib: Path | None, camera: str | None, auto_mount: bool = False):
    """A one-camera rig for ``--source`` by the one calibration policy,
    :func:`perception.geometry.camera_for_source` (``synth://`` sources bring their own camera)."""
    from perception.geometry import CalibrationError, Rig, camera_for_source
    from perception.pipeline.runner import probe_size
    from perception.pipeline.sources import SourceError, SynthSource, source_kind
    from perception.utils.image_io import DataError

    kind = source_kind(source)
    if calib is None and kind == "synth":
        try:
            cam = SynthSource(source).camera_model
        except SourceError as exc:
            fail(str(exc))
        return Rig("synth", [cam])
    try:
        frame_size = None
        if calib is None and kind not in ("video", "images"):
            frame_size = probe_size(source)  # a live source: its first frame's size
        cam = camera_for_source(source, calib, auto_mount, camera=camera, frame_size=frame_size)
    except (CalibrationError, DataError, SourceError) as exc:
        fail(str(exc).splitlines()[0])
    return Rig(cam.name if calib is not None else "dashcam", [cam])


@app.command("run", help="Run the pipeline on a video, camera or rig: boxes, distances, BEV map, video, JSON log.")
def run_command(
    source: str = typer.Option(None, "--source", "-s", help="Video file, image folder/glob, camera index, "
                               "/dev/videoN, rtsp:// or http:// URL, GStreamer pipeline, or synth://."),
    calib: Path = typer.Option(None, "--calib", "-c", help="Calibration YAML (camera or rig) for --source. "
                               "Without it: 60 deg horizontal FOV, 1.4 m high and level is assumed (warning), "
                               "or the mount measured on the lane lines (see --auto-mount)."),
    camera: str = typer.Option(None, "--camera-name", help="Which camera of a multi-camera --calib file."),
    auto_mount: bool = typer.Option(True, "--auto-mount/--no-auto-mount", help="Without --calib, on a video "
                                    "file or image folder: measure the assumed camera's pitch (lane lines' "
                                    "vanishing point) and height (ego lane 3.5 m wide) where the lanes are clear."),
    rig: Path = typer.Option(None, "--rig", "-r", help="Rig YAML with one 'source' per camera."),
    model: str = typer.Option("rep-s", "--model", "-m", help="Registered model name or checkpoint path."),
    backend: str = typer.Option("torch", "--backend", help="torch, torch-compile, cuda-graph, onnx or tensorrt."),
    precision: str = typer.Option("auto", "--precision", help="torch backends: auto (bf16 on CPUs with native "
                                  "bf16, fp16 on CUDA, else fp32), fp32, bf16 or fp16."),
    score_thresh: float = typer.Option(0.5, "--score-thresh", help="Detections kept for display, lifting and "
                                       "tracking."),
    ground_gate: bool = typer.Option(True, "--ground-gate/--no-ground-gate", help="Drop detections whose 3D box "
                                     "floats above the ground plane (0.5 m + 6 per cent of the distance); needs a "
                                     "sensible mount in the calibration."),
    out: Path = typer.Option(Path("runs/run"), "--out", "-o", help="Output folder."),
    show: bool = typer.Option(False, "--show", help="Open an OpenCV window (needs a GUI OpenCV build)."),
    serve: int = typer.Option(None, "--serve", help="Serve the live view on http://127.0.0.1:PORT/."),
    max_frames: int = typer.Option(None, "--max-frames", "-n", help="Stop after N synchronised frames."),
    size: str = typer.Option(None, "--size", help="Network input HxW (multiples of 32); default: the first "
                             "camera scaled to the models' training focal length (long side 320-640)."),
    device: str = typer.Option("auto", "--device", help="cpu, cuda or auto."),
    no_render: bool = typer.Option(False, "--no-render", help="Skip rendering (no video.mp4/bev.png)."),
    loop: bool = typer.Option(False, "--loop", help="Loop file sources until stopped."),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    setup_logging(verbose)
    from perception.geometry import CalibrationError
    from perception.pipeline.runner import build_rig

    if (source is None) == (rig is None):
        fail("give either --source (one camera) or --rig (a rig file with sources)")
    if rig is not None and calib is not None:
        fail("--calib goes with --source; a --rig file carries its own calibration")
    opts = pipeline_options(model=model, backend=backend, out=out, show=show, serve=serve, max_frames=max_frames,
                            size=size, device=device, render=not no_render, precision=precision,
                            score_thresh=score_thresh,
                            extra={"loop": loop, "ground_gate": ground_gate})
    if rig is not None:
        try:
            the_rig, sources = build_rig(rig)
        except CalibrationError as exc:
            fail(str(exc))
    else:
        the_rig, sources = single_camera_rig(source, calib, camera, auto_mount), [source]
    execute(the_rig, sources, opts, "run")
