"""`perception synth`: Render a synthetic multi-camera driving dataset."""

from __future__ import annotations

import os
import shlex
import sys
import time
from pathlib import Path

import typer

from perception.cli.app import app, console, fail, setup_logging


def _parse_size(size: str | None) -> tuple[int, int] | None:
    if size is None:
        return None
    try:
        h, w = (int(v) for v in size.lower().split("x"))
    except ValueError:
        fail(f"--size must look like 256x448 (HxW), got {size!r}")
    if h <= 0 or w <= 0 or h > 4096 or w > 4096:
        fail(f"--size {size}: height and width must be in 1..4096")
    return h, w


@app.command("synth", help="Render a synthetic multi-camera driving dataset (videos, depth, labels, BEV).")
def synth_command(
    out: Path = typer.Option(..., "--out", "-o", help="Output folder."),
    rig: str = typer.Option("surround6", "--rig", "-r", help="Rig YAML or built-in name (surround6, front_wide)."),
    frames: int = typer.Option(100, "--frames", "-n", help="Number of frames."),
    seed: int = typer.Option(0, "--seed", "-s", help="World seed (same seed = identical pixels)."),
    size: str = typer.Option(None, "--size", help="Render size HxW, e.g. 256x448 (default: the rig's size)."),
    fps: float = typer.Option(10.0, "--fps", help="Frames per second of the drive."),
    episode_frames: int = typer.Option(0, "--episode-frames",
                                       help="Frames per episode (new world each episode; 0 = one episode)."),
    fmt: str = typer.Option("video", "--format", help="video (one mp4 per camera) or images (JPEG per frame)."),
    depth: bool = typer.Option(True, "--depth/--no-depth", help="Write z-depth PNGs."),
    depth_scale: int = typer.Option(1, "--depth-scale", help="Store depth downscaled by this factor (nearest)."),
    bev: bool = typer.Option(True, "--bev/--no-bev", help="Write BEV ground-truth PNGs."),
    weather: str = typer.Option(None, "--weather", help="clear, overcast, rain or fog (default: random)."),
    time_of_day: str = typer.Option(None, "--time-of-day", help="day, dusk or night (default: random)."),
    scenery: str = typer.Option(None, "--scenery", help="urban, suburban or rural (default: random)."),
    barriers: float = typer.Option(0.0, "--barriers", help="Chance (0-1) that a road side is lined by concrete "
                                   "barriers or guard rails (rural; less in towns). 0 keeps every seed as before."),
    roadworks: float = typer.Option(0.0, "--roadworks", help="Chance (0-1) per road side of a 10-40 m run of red, "
                                    "orange or yellow and white plastic road-works barriers. 0 keeps every seed as before."),
    shrubs: float = typer.Option(0.0, "--shrubs", help="Chance (0-1) per road side of bushes beyond the sidewalk "
                                 "and (in towns) planters on it. 0 keeps every seed as before."),
    closures: float = typer.Option(0.0, "--closures", help="Chance (0-1) per road side of a 20-80 m line of red "
                                   "or orange and white plastic barriers on the road's edge. 0 keeps every seed as before."),
    lane_closures: float = typer.Option(0.0, "--lane-closures", help="Chance (0-1) per road side of a line of water-filled "
                                        "barriers closing the outer lane's edge, parked cars behind it. 0 keeps every seed as before."),
    greenery: float = typer.Option(0.0, "--greenery", help="Chance (0-1) that a town building stands back behind a tall "
                                   "hedge, and that a street tree is 1.4-2x larger. 0 keeps every seed as before."),
    medians: float = typer.Option(0.0, "--medians", help="Chance (0-1) that the road has a concrete median barrier "
                                  "between its two directions (rural; less in towns). 0 keeps every seed as before."),
    arcades: float = typer.Option(0.0, "--arcades", help="Chance (0-1) that a town building has an arcade: upper "
                                  "floors on large concrete pillars over a recessed ground storey. 0 keeps every seed as before."),
    leaves: float = typer.Option(0.0, "--leaves", help="Strength (0-1) of leaf-scale texture on near bushes, hedges "
                                 "and tree crowns (fades where a pixel is bigger than a leaf). 0 keeps every image as before."),
    fast_shutter: float = typer.Option(0.0, "--fast-shutter", help="Chance (0-1) that a daylight frame is exposed "
                                       "for 1/1000 s instead of 1/150 s: no motion blur on near things, as real "
                                       "cameras in sun. 0 keeps every image as before."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda or auto."),
    threads: int = typer.Option(0, "--threads", help="torch CPU threads (0 = torch default; use 1 on a busy machine)."),
    workers: int = typer.Option(0, "--workers", help="Render processes, one torch thread each (0 = one per CPU "
                                "core on the CPU; 1 = this process only). Same pixels either way."),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    setup_logging(verbose)
    import torch
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from perception.data.synth import DatasetWriter, RenderOptions, SynthDataset, WorldConfig, resolve_rig
    from perception.geometry import CalibrationError

    if frames <= 0:
        fail("--frames must be positive")
    if fps <= 0:
        fail("--fps must be positive")
    if fmt not in ("video", "images"):
        fail(f"--format must be video or images, got {fmt!r}")
    if depth_scale < 1:
        fail("--depth-scale must be >= 1")
    for name, val, allowed in (("--weather", weather, ("clear", "overcast", "rain", "fog")),
                               ("--time-of-day", time_of_day, ("day", "dusk", "night")),
                               ("--scenery", scenery, ("urban", "suburban", "rural"))):
        if val is not None and val not in allowed:
            fail(f"{name} must be one of {', '.join(allowed)}, got {val!r}")
    if threads < 0:
        fail("--threads must be >= 0")
    if workers < 0:
        fail("--workers must be >= 0")
    if threads:
        torch.set_num_threads(threads)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        fail("--device cuda requested but CUDA is not available")
    hw = _parse_size(size)
    try:
        the_rig = resolve_rig(rig, hw)
    except (CalibrationError, KeyError, OSError) as exc:
        fail(f"--rig {rig}: {exc}")
    for name, value in (("--barriers", barriers), ("--roadworks", roadworks), ("--shrubs", shrubs),
                        ("--closures", closures), ("--medians", medians), ("--arcades", arcades),
                        ("--leaves", leaves), ("--lane-closures", lane_closures),
                        ("--greenery", greenery), ("--fast-shutter", fast_shutter)):
        if not 0.0 <= value <= 1.0:
            fail(f"{name} must be in 0..1, got {value}")
    cfg = WorldConfig(weather=weather, time_of_day=time_of_day, scenery=scenery, barriers=barriers, roadworks=roadworks,
                      shrubs=shrubs, closures=closures, medians=medians, arcades=arcades, leaves=leaves,
                      lane_closures=lane_closures, greenery=greenery, fast_shutter=fast_shutter)
    opts = RenderOptions()
    ds = SynthDataset(the_rig, seed=seed, frames=frames, fps=fps, episode_frames=episode_frames or frames,
                      config=cfg, device=device, options=opts)
    try:
        writer = DatasetWriter(out, the_rig, fps, fmt=fmt, depth=depth, depth_scale=depth_scale, bev=bev)
    except (OSError, RuntimeError) as exc:
        fail(f"--out {out}: {exc}")
    cam0 = the_rig.cameras[0]
    t0 = time.perf_counter()
    with Progress(TextColumn("[bold]synth[/]"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[fps]}"),
                  TimeRemainingColumn(), console=console) as prog:
        task = prog.add_task("render", total=frames, fps="")
        n_workers = workers or ((os.cpu_count() or 1) if device == "cpu" else 1)
        for i, sample in enumerate(ds.iter_parallel(n_workers)):
            writer.write(sample)
            el = time.perf_counter() - t0
            prog.update(task, advance=1, fps=f"{(i + 1) / el:.1f} frames/s")
    command = "perception synth " + " ".join(shlex.quote(a) for a in sys.argv[2:]) if len(sys.argv) > 2 else None
    writer.close({"seed": seed, "episode_frames": episode_frames or frames, "device": device,
                  "world_config": {"weather": weather, "time_of_day": time_of_day, "scenery": scenery},
                  "command": command, "render_seconds": round(time.perf_counter() - t0, 2)}, opts.bev)
    console.print(f"wrote {frames} frames x {len(the_rig)} cameras ({cam0.height}x{cam0.width}) to {out} "
                  f"in {time.perf_counter() - t0:.1f} s", highlight=False)
