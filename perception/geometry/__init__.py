"""Camera geometry: pinhole + distortion cameras, rigs, SE(3) helpers, ground-plane mapping."""

from perception.geometry.camera import CalibrationError, Camera, Rig
from perception.geometry.ipm import BEVSpec, image_to_ground, ground_to_image, warp_to_bev
from perception.geometry.lidar import lidar_depth_map, project_lidar
from perception.geometry.resize import FrameResize, plan_resize, resize_frame_and_K
from perception.geometry.source_camera import (DEFAULT_HEIGHT_M, DEFAULT_HFOV_DEG, camera_for_source, default_camera,
                                               load_camera)
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
    "rot_x", "rot_y", "rot_z", "transform_points", "BEVSpec", "image_to_ground", "ground_to_image",
    "warp_to_bev", "lidar_depth_map", "project_lidar", "FrameResize", "plan_resize", "resize_frame_and_K",
    "camera_for_source", "default_camera", "load_camera", "DEFAULT_HFOV_DEG", "DEFAULT_HEIGHT_M",
]
