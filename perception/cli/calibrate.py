"""`perception calibrate`: calibrate a camera from chessboard images and write a rig YAML."""

from __future__ import annotations

import dataclasses
import glob
import math
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from perception.cli.app import app, console, fail

if TYPE_CHECKING:
    from perception.geometry import Camera
    from perception.geometry.horizon import HorizonEstimate


@app.command("calibrate", help="Calibrate a camera from chessboard images (OpenCV) and write a single-camera rig YAML.")
def calibrate_command(
    images: str = typer.Option(..., "--images", help="Glob of chessboard photos, e.g. 'camera_cal/*.jpg' (quote it)."),
    pattern: str = typer.Option("9x6", "--pattern", help="Inner corners per row x per column, e.g. 9x6."),
    out: Path = typer.Option(..., "--out", help="Output rig YAML (readable by Rig.load / --calib)."),
    square_size: float = typer.Option(1.0, "--square-size", help="Chessboard square size in metres (intrinsics do not depend on it)."),
    name: str = typer.Option("front", "--name", help="Camera name in the rig."),
    height: float = typer.Option(1.4, "--height", help="Assumed mount height above the ground (m)."),
    forward: float = typer.Option(0.0, "--forward", help="Assumed mount position ahead of the ego origin / rear axle (m)."),
    pitch_deg: float = typer.Option(0.0, "--pitch-deg", help="Assumed downward pitch of the camera (deg; negative = up)."),
    horizon_row: float = typer.Option(None, "--horizon-row",
                                      help="Pixel row (undistorted, calibration resolution) of the road's vanishing "
                                           "point on a straight, level road; sets the pitch instead of --pitch-deg."),
    horizon_from: str = typer.Option(None, "--horizon-from",
                                     help="Road video / image glob from this camera: find the horizon row from "
                                          "its lane lines (perception.geometry.horizon) and set the pitch from it."),
    lane_width: float = typer.Option(None, "--lane-width",
                                     help="With --horizon-from: measure the height instead of --height from the ego "
                                          "lane, this many metres between the inner edges of its lines (e.g. 3.5)."),
    yaw_deg: float = typer.Option(0.0, "--yaw-deg", help="Assumed yaw (deg, 0 = forward, 90 = left)."),
) -> None:
    from perception.data.readers.common import DataError
    from perception.geometry import CalibrationError, camera_pose
    from perception.geometry.calibration import calibrate_chessboard, parse_pattern, pitch_from_horizon

    try:
        pat = parse_pattern(pattern)
    except ValueError as exc:
        fail(str(exc))
    if square_size <= 0:
        fail(f"--square-size must be positive, got {square_size}")
    if sum([horizon_row is not None, horizon_from is not None, pitch_deg != 0.0]) > 1:
        fail("give only one of --pitch-deg, --horizon-row and --horizon-from")
    if lane_width is not None and (horizon_from is None or not 2.0 <= lane_width <= 5.0):
        fail("--lane-width needs --horizon-from and a lane of 2-5 m (between the inner edges of its lines)")
    from perception.data.readers.video import natural_key

    if any(c in images for c in "*?["):
        paths = glob.glob(images, recursive=True)
    elif Path(images).is_dir():
        paths = [str(p) for p in Path(images).iterdir()]
    else:
        paths = [images]
    paths = sorted((p for p in paths if Path(p).is_file()), key=natural_key)
    if not paths:
        fail(f"no files match {images!r}")
    try:
        with Progress(TextColumn("[bold]finding corners"), BarColumn(), MofNCompleteColumn(),
                      TextColumn("{task.description}"), TimeElapsedColumn(), console=console, transient=True) as bar:
            task = bar.add_task("", total=len(paths))
            result = calibrate_chessboard(paths, pat, square_size=square_size, name=name,
                                          progress=lambda p: bar.update(task, advance=1, description=Path(p).name))
        if horizon_from is not None:
            est = _horizon_from(horizon_from, result.camera)
            horizon_row = est.row
            console.print(f"horizon row {est.row:.1f} px from the lane lines of {est.images_used} of "
                          f"{est.images_seen} frames (IQR {est.spread:.1f} px)", highlight=False)
        if horizon_row is not None:
            pitch_deg = pitch_from_horizon(result.camera.K, horizon_row)
        if lane_width is not None:
            height = _height_from_lanes(result.camera, est, pitch_deg, lane_width)
        mount = camera_pose(forward, 0.0, height, math.radians(yaw_deg), pitch=math.radians(pitch_deg))
        result.camera = dataclasses.replace(result.camera, T_ego_cam=mount)
        result.rig(name=out.stem).save(out)
    except (CalibrationError, DataError, ValueError) as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"{out}: cannot write ({exc.strerror})")

    cam = result.camera
    console.print(f"[bold green]RMS reprojection error: {result.rms:.3f} px[/] "
                  f"({len(result.used)} of {len(paths)} images used, {result.image_size[0]}x{result.image_size[1]})",
                  highlight=False)
    if result.skipped:
        table = Table("skipped image", "reason", title=f"{len(result.skipped)} skipped", title_justify="left")
        for p, reason in result.skipped:
            table.add_row(Path(p).name, reason)
        console.print(table)
    console.print(f"fx {cam.fx:.2f}  fy {cam.fy:.2f}  cx {cam.K[0, 2]:.2f}  cy {cam.K[1, 2]:.2f}  "
                  f"dist {[round(float(d), 5) for d in cam.dist]}", highlight=False)
    worst = max(result.per_image_rms.items(), key=lambda kv: kv[1])
    console.print(f"per-image RMS {min(result.per_image_rms.values()):.2f}-{worst[1]:.2f} px "
                  f"(worst {Path(worst[0]).name})", highlight=False)
    measured = " (from the horizon row)" if horizon_row is not None else ""
    high = " (from the lane width)" if lane_width is not None else ""
    console.print(f"mount assumed: {height:.2f} m high{high}, {forward:.2f} m ahead of the ego origin, "
                  f"pitch {pitch_deg:.2f} deg{measured}, yaw {yaw_deg:.1f} deg (edit T_ego_cam if yours differs)",
                  highlight=False)
    console.print(f"wrote {out}", highlight=False)


def _height_from_lanes(camera: "Camera", est: "HorizonEstimate", pitch_deg: float, lane_width: float) -> float:
    """Camera height from the ego lane's apparent width in the ``--horizon-from`` frames."""
    from perception.geometry.horizon import camera_height_from_lanes

    h = camera_height_from_lanes(camera, est.observations, lane_width, pitch_deg=pitch_deg)
    if h is None:
        raise ValueError("--lane-width: no frame shows both lines of the ego lane; give --height instead")
    console.print(f"height {h.height:.2f} m from the {lane_width:.2f} m ego lane in {h.images_used} frames "
                  f"(IQR {h.spread:.2f} m)", highlight=False)
    return h.height


def _horizon_from(source: str, camera: "Camera") -> "HorizonEstimate":
    """Horizon estimate over up to 300 frames spread over ``source`` (video, folder or glob)."""
    from perception.data.readers.video import VideoReader
    from perception.geometry.horizon import estimate_horizon_row

    reader = VideoReader(source, camera)
    reader.stride = max(1, reader.frame_count // 300)
    return estimate_horizon_row((s.images[0] for s in reader), camera)
