"""Camera geometry: pinhole + distortion cameras, rigs, SE(3) helpers, ground-plane mapping."""

from perception.geometry.camera import CalibrationError, Camera, Rig
from perception.geometry.transforms import (
    camera_pose,
    invert_transform,
    make_transform,
    rot_x,
    rot_y,
    rot_z,
    transform_points,
)

__all__ = [
    "CalibrationError", "Camera", "Rig", "camera_pose", "invert_transform", "make_transform",
    "rot_x", "rot_y", "rot_z", "transform_points",
]
