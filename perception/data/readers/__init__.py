"""Readers of real data sets; each returns :class:`perception.data.Sample`.

- :mod:`.nuscenes`: mmdetection3d info pickle (:class:`NuScenesInfoReader`) and the official
  table layout (:class:`NuScenesReader`); :func:`open_nuscenes` picks one.
- :mod:`.kitti`: KITTI object layout (:class:`KittiReader`) and depth PNGs.
- :mod:`.video`: video files, image folders and globs with a calibration (:class:`VideoReader`).

Bad data files raise :class:`DataError`; bad calibration :class:`perception.geometry.CalibrationError`.
"""

from perception.data.readers.common import DataError, read_depth_png, read_image, read_points
from perception.data.readers.kitti import KittiReader, read_kitti_calib, read_kitti_labels
from perception.data.readers.nuscenes import NuScenesInfoReader, NuScenesReader, open_nuscenes
from perception.data.readers.video import VideoReader, load_camera

__all__ = ["DataError", "read_depth_png", "read_image", "read_points", "KittiReader", "read_kitti_calib",
           "read_kitti_labels", "NuScenesInfoReader", "NuScenesReader", "open_nuscenes", "VideoReader",
           "load_camera"]
