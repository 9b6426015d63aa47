"""Where a camera comes from: the one calibration policy of ``perception run``, ``live``,
``eval`` and ``adapt`` (:func:`camera_for_source`).

In order:

1. ``calib``: a camera or rig YAML (``camera`` picks one camera of a rig), rescaled with a
   warning when the source's frames have another size;
2. ``<source>.yaml`` next to a video file or image folder (``dashcam.mp4`` -> ``dashcam.yaml``);
3. the documented default: square pixels, centred principal point, ``DEFAULT_HFOV_DEG``
   horizontal field of view, ``DEFAULT_HEIGHT_M`` above the road, level; with ``auto_mount``
   (video files and image folders) the pitch and height measured on the lane lines
   (:func:`perception.geometry.horizon.estimate_mount`) where they are clear.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

from perception.geometry.camera import CalibrationError, Camera, Rig
from perception.geometry.horizon import LaneMount, estimate_mount
from perception.geometry.transforms import camera_pose
from perception.utils.image_io import DataError
from perception.utils.video_io import FileFrames, is_file_source

log = logging.getLogger(__name__)

__all__ = ["camera_for_source", "default_camera", "load_camera", "DEFAULT_HFOV_DEG", "DEFAULT_HEIGHT_M",
           "MOUNT_FRAMES", "MOUNT_SCAN_FRAMES",
           "calibration_beside"]

DEFAULT_HFOV_DEG = 60.0   # assumed horizontal field of view of an uncalibrated dashcam
DEFAULT_HEIGHT_M = 1.4    # assumed mounting height of an uncalibrated dashcam
MOUNT_FRAMES = 90         # frames looked at for the lane-measured mount ...
MOUNT_SCAN_FRAMES = 900   # ... spread over the first this many


def default_camera(width: int, height: int, name: str = "front", hfov_deg: float = DEFAULT_HFOV_DEG,
                   height_m: float = DEFAULT_HEIGHT_M, pitch_deg: float = 0.0) -> Camera:
    """The documented uncalibrated default: square pixels, centred principal point, ``hfov_deg``
    horizontal field of view, ``height_m`` above the ground at the rear axle, looking straight
    ahead (or ``pitch_deg`` down; negative = up)."""
    f = (width / 2) / math.tan(math.radians(hfov_deg) / 2)
    K = [[f, 0, (width - 1) / 2], [0, f, (height - 1) / 2], [0, 0, 1]]
    return Camera(name, width, height, K, [0, 0, 0, 0, 0],
                  camera_pose(0.0, 0.0, height_m, 0.0, pitch=math.radians(pitch_deg)))


def load_camera(calib: str | Path | Rig | Camera, camera: str | None = None) -> Camera:
    """One camera from a calibration: a YAML path (rig or single camera), a :class:`Rig` or a
    :class:`Camera`. ``camera`` selects by name in a multi-camera rig (default: the first)."""
    if isinstance(calib, Camera):
        return calib
    if isinstance(calib, (str, Path)) and not Path(calib).is_file():
        raise CalibrationError(f"{calib}: no such calibration file")
    try:
        rig = calib if isinstance(calib, Rig) else Rig.load(calib)
    except CalibrationError as exc:
        if str(exc).endswith("missing field 'cameras'"):  # neither a rig nor a one-camera file
            raise CalibrationError(f"{calib}: missing field 'K' (a camera file) or 'cameras' (a rig file)") from None
        raise
    if camera is not None:
        try:
            return rig[camera]
        except KeyError as exc:
            raise CalibrationError(f"{calib if not isinstance(calib, Rig) else rig.name}: {exc.args[0]}") from None
    if len(rig) > 1:
        log.warning("%s has %d cameras; using the first ('%s')", rig.name, len(rig), rig.cameras[0].name)
    return rig.cameras[0]


def _fit_to_frames(cam: Camera, size: tuple[int, int] | None, where: str) -> Camera:
    if size is None or size == cam.size:
        return cam
    aspect = abs(size[0] / size[1] - cam.width / cam.height) > 0.01
    log.warning("%s: frames are %dx%d but the calibration is for %dx%d; scaling K%s", where, size[0], size[1],
                cam.width, cam.height, " (the aspect ratio differs too: check the calibration)" if aspect else "")
    return cam.scaled(*size)


def calibration_beside(source: str | Path) -> Path | None:
    """``<video>.yaml`` next to a video file, if there is one."""
    p = Path(str(source))
    beside = p.with_suffix(".yaml")
    return beside if p.is_file() and p.suffix.lower() != ".yaml" and beside.is_file() else None


def camera_for_source(source: str | Path, calib: str | Path | Rig | Camera | None = None, auto_mount: bool = True,
                      *, camera: str | None = None, frame_size: tuple[int, int] | None = None,
                      lane_width_m: float | None = None) -> Camera:
    """The camera of ``source`` (a video file, image folder or glob; for a live source pass its
    ``frame_size`` = (width, height)) by the policy in the module docstring.

    Raises :class:`CalibrationError` for a bad calibration file and
    :class:`~perception.utils.image_io.DataError` for an unreadable file source.
    """
    frames = FileFrames(source) if is_file_source(source) else None
    try:
        return _camera_for(source, frames, calib, auto_mount, camera, frame_size, lane_width_m)
    finally:
        if frames is not None:
            frames.close()


def _camera_for(source: str | Path, frames: FileFrames | None, calib: str | Path | Rig | Camera | None,
                auto_mount: bool, camera: str | None, frame_size: tuple[int, int] | None,
                lane_width_m: float | None) -> Camera:
    size = frames.size if frames is not None else frame_size
    if calib is not None:
        return _fit_to_frames(load_camera(calib, camera), size, str(source))
    beside = calibration_beside(source)
    if beside is not None:
        log.info("%s: using the calibration next to it, %s", source, beside)
        return _fit_to_frames(load_camera(beside, camera), size, str(source))
    if size is None:
        raise DataError(f"{source}: no such file or folder (a live source needs its frame_size)")
    w, h = size
    mount: LaneMount | None = None
    if auto_mount and frames is not None:
        mount = estimate_mount(frames.sample(MOUNT_FRAMES, MOUNT_SCAN_FRAMES), default_camera(w, h),
                               lane_width_m=lane_width_m)
    pitch = 0.0 if mount is None else mount.pitch_deg
    height = DEFAULT_HEIGHT_M if mount is None or mount.height_m is None else mount.height_m
    look = ("looking straight ahead" if mount is None else
            f"tilted {abs(pitch):.1f} deg {'down' if pitch >= 0 else 'up'} (from the lane lines)")
    where = "assumed" if mount is None or mount.height_m is None else "from the lane width"
    log.warning("%s: no calibration: assuming a %dx%d camera with %.0f deg horizontal field of view, %.2f m above "
                "the ground (%s), %s; distances are approximate (calibrate with `perception calibrate`)",
                source, w, h, DEFAULT_HFOV_DEG, height, where, look)
    return default_camera(w, h, height_m=height, pitch_deg=pitch)
