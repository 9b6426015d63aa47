"""Camera / Rig / IPM / LiDAR projection geometry (no shared data needed)."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from perception.geometry import CalibrationError, Camera, Rig, camera_pose
from perception.geometry.ipm import (BEVSpec, bev_remap_maps, ground_to_image, ground_to_image_homography,
                                     image_to_ground, warp_to_bev)
from perception.geometry.lidar import lidar_depth_map, project_lidar
from perception.geometry.transforms import matrix_to_quaternion, quaternion_to_matrix, rot_z

DASHCAM_DIST = [-0.2568, 0.0434, -0.00069, 0.00013, -0.1150]


def make_camera(distorted: bool = False, pitch_deg: float = 5.0) -> Camera:
    K = [[1158.8, 0, 669.6], [0, 1154.1, 388.1], [0, 0, 1]]
    return Camera("front", 1280, 720, K, DASHCAM_DIST if distorted else np.zeros(5),
                  camera_pose(1.5, 0.2, 1.4, math.radians(3.0), pitch=math.radians(pitch_deg)))


@pytest.fixture(params=[False, True], ids=["pinhole", "distorted"])
def camera(request) -> Camera:
    return make_camera(request.param)


def test_project_unproject_round_trip(camera: Camera) -> None:
    rng = np.random.default_rng(0)
    uv = rng.uniform([0, 0], [camera.width, camera.height], (500, 2))
    depth = rng.uniform(1, 80, 500)
    pts = camera.unproject(uv, depth)                  # ego frame
    uv2, d2 = camera.project(pts)
    np.testing.assert_allclose(d2, depth, atol=1e-9)
    np.testing.assert_allclose(uv2, uv, atol=1e-6)


def test_project_known_point() -> None:
    cam = Camera("c", 640, 480, [[500, 0, 320], [0, 500, 240], [0, 0, 1]], T_ego_cam=camera_pose(0, 0, 1.5, 0))
    # 10 m ahead, 1 m left, on the ground: 1.5 m below and 1 m left of the optical axis
    uv, d = cam.project(np.array([[10.0, 1.0, 0.0]]))
    np.testing.assert_allclose(d, [10.0])
    np.testing.assert_allclose(uv[0], [320 - 50, 240 + 75])


def test_distortion_round_trip() -> None:
    cam = make_camera(distorted=True)
    rng = np.random.default_rng(1)
    uv = rng.uniform([0, 0], [cam.width, cam.height], (1000, 2))
    rays = cam.pixel_rays(uv)
    uv2, _ = cam.project_cam(rays)
    np.testing.assert_allclose(uv2, uv, atol=1e-6)
    # the model really distorts: ignoring it moves corner pixels by many pixels
    uv3, _ = cam.project_cam(rays, apply_distortion=False)
    assert np.abs(uv3 - uv).max() > 20


def test_undistort_image_straightens_with_same_K() -> None:
    cam = make_camera(distorted=True)
    img = np.zeros((cam.height, cam.width, 3), np.uint8)
    assert cam.undistort(img).shape == img.shape
    assert not cam.pinhole().has_distortion and np.array_equal(cam.pinhole().K, cam.K)
    with pytest.raises(CalibrationError, match="scaled"):
        cam.undistort(np.zeros((10, 10, 3), np.uint8))


def test_scaled_consistency(camera: Camera) -> None:
    pts = camera.unproject(np.array([[100.0, 200.0], [640.0, 360.0], [1200.0, 700.0]]), 15.0)
    small = camera.scaled(640, 360)
    uv, _ = camera.project(pts)
    uv_s, _ = small.project(pts)
    # cv2.resize pixel-centre convention: u' = (u + 0.5) * s - 0.5
    np.testing.assert_allclose(uv_s, (uv + 0.5) * 0.5 - 0.5, atol=1e-6)
    np.testing.assert_allclose(small.scaled(1280, 720).K, camera.K, atol=1e-9)


def test_cropped_shifts_principal_point(camera: Camera) -> None:
    pts = camera.unproject(np.array([[700.0, 500.0]]), 20.0)
    crop = camera.cropped(100, 50, 800, 600)
    uv, _ = camera.project(pts)
    uv_c, _ = crop.project(pts)
    np.testing.assert_allclose(uv_c, uv - [100, 50], atol=1e-6)


def test_rig_save_load_round_trip(tmp_path) -> None:
    rig = Rig("test", [make_camera(True), Camera("back", 800, 600, [[400, 0, 400], [0, 400, 300], [0, 0, 1]],
                                                 T_ego_cam=camera_pose(-1, 0, 1.6, math.pi))])
    path = tmp_path / "rig.yaml"
    rig.save(path)
    back = Rig.load(path)
    assert back.names == ["front", "back"]
    for a, b in zip(rig, back):
        assert (a.width, a.height) == (b.width, b.height)
        np.testing.assert_allclose(a.K, b.K, atol=1e-6)
        np.testing.assert_allclose(a.dist, b.dist, atol=1e-8)
        np.testing.assert_allclose(a.T_ego_cam, b.T_ego_cam, atol=1e-8)


def test_single_camera_yaml_loads_as_rig(tmp_path) -> None:
    path = tmp_path / "cam.yaml"
    path.write_text("width: 640\nheight: 480\nK: [[500, 0, 320], [0, 500, 240], [0, 0, 1]]\n")
    rig = Rig.load(path)
    assert len(rig) == 1 and rig[0].width == 640 and rig.name == "cam"


def test_quaternion_round_trip() -> None:
    rng = np.random.default_rng(2)
    for _ in range(20):
        q = rng.normal(size=4)
        q = q / np.linalg.norm(q) * np.sign(q[0])
        R = quaternion_to_matrix(q)
        np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-12)
        np.testing.assert_allclose(matrix_to_quaternion(R), q, atol=1e-9)
    np.testing.assert_allclose(quaternion_to_matrix([math.cos(0.3), 0, 0, math.sin(0.3)]), rot_z(0.6), atol=1e-12)


# --------------------------------------------------------------------------- IPM
def test_ipm_ground_point_round_trip(camera: Camera) -> None:
    xy = np.array([[12.0, -3.0], [6.0, 2.5], [30.0, 0.0]])
    uv = ground_to_image(camera, xy)
    assert np.all((uv >= 0) & (uv < [camera.width, camera.height]))
    back = image_to_ground(camera, uv)
    np.testing.assert_allclose(back, xy, atol=1e-3)     # within 1 mm


def test_homography_matches_projection() -> None:
    cam = make_camera(distorted=False)
    H = ground_to_image_homography(cam)
    xy = np.array([[12.0, -3.0], [8.0, 4.0]])
    p = np.c_[xy, np.ones(2)] @ H.T
    np.testing.assert_allclose(p[:, :2] / p[:, 2:], ground_to_image(cam, xy), atol=1e-6)


def test_image_to_ground_rejects_sky_and_behind() -> None:
    cam = make_camera(distorted=False, pitch_deg=0.0)
    out = image_to_ground(cam, np.array([[640.0, 100.0], [640.0, 700.0]]))   # above / below the horizon
    assert np.isnan(out[0]).all() and np.isfinite(out[1]).all() and out[1, 0] > cam.T_ego_cam[0, 3]
    assert np.isnan(ground_to_image(cam, np.array([[-5.0, 0.0]]))).all()     # behind the camera


def test_bev_spec_orientation() -> None:
    spec = BEVSpec(x_range=(-10, 30), y_range=(-20, 20), resolution=0.5)
    assert spec.shape == (80, 80)
    col0, row0 = spec.ego_pixel
    assert (col0, row0) == (39.5, 59.5)
    fwd, left = spec.ego_to_pixel(np.array([[10.0, 0.0], [0.0, 5.0]]))
    assert fwd[1] < row0 and fwd[0] == col0          # forward = up
    assert left[0] < col0 and left[1] == row0        # left = left
    np.testing.assert_allclose(spec.pixel_to_ego(spec.ego_to_pixel(np.array([[3.3, -7.1]]))), [[3.3, -7.1]])
    gx, gy = spec.grid()
    np.testing.assert_allclose(spec.pixel_to_ego(np.array([[5, 7]])), [[gx[7, 5], gy[7, 5]]])


def test_warp_to_bev_samples_the_right_pixel(camera: Camera) -> None:
    spec = BEVSpec(x_range=(-10, 40), y_range=(-15, 15), resolution=0.1)
    # an image whose pixel values are its own coordinates: the BEV then shows where it sampled
    v, u = np.mgrid[0:camera.height, 0:camera.width].astype(np.float32)
    img = np.dstack([u, v, np.ones_like(u)])
    bev, valid = warp_to_bev(img, camera, spec)
    assert bev.shape == (500, 300, 3) and valid.dtype == bool
    # behind the camera nothing is valid, far ahead in the centre everything is
    col, row = spec.ego_to_pixel(np.array([[-5.0, 0.0], [20.0, 0.0]])).round().astype(int).T
    assert not valid[row[0], col[0]] and valid[row[1], col[1]]
    assert not bev[~valid].any() and np.all(bev[valid][:, 2] > 0.99)
    for x, y in [(12.0, -3.0), (8.0, 2.0), (25.0, 1.0)]:
        c, r = spec.ego_to_pixel(np.array([[x, y]]))[0].round().astype(int)
        expect = ground_to_image(camera, spec.pixel_to_ego(np.array([[c, r]])))[0]
        np.testing.assert_allclose(bev[r, c, :2], expect, atol=0.01)
    # and a uint8 image keeps its dtype / channels
    out, _ = warp_to_bev(np.zeros((camera.height, camera.width, 3), np.uint8), camera, spec)
    assert out.dtype == np.uint8 and out.shape == (500, 300, 3)


def test_bev_maps_never_fold_back_through_distortion() -> None:
    """Every valid BEV pixel's image position maps back to the same ground point; with the
    polynomial distortion model evaluated far outside the FOV it would not."""
    cam = make_camera(distorted=True, pitch_deg=10.0)
    spec = BEVSpec(x_range=(-5, 60), y_range=(-60, 60), resolution=0.25)
    map_x, map_y, valid = bev_remap_maps(cam, spec)
    assert 0.05 < valid.mean() < 0.9
    gx, gy = spec.grid()
    back = image_to_ground(cam, np.c_[map_x[valid], map_y[valid]].astype(np.float64))
    err = np.linalg.norm(back - np.c_[gx[valid], gy[valid]], axis=1)
    assert np.nanmax(err / np.hypot(gx[valid] - 1.5, gy[valid])) < 1e-3   # float32 map precision
    assert bev_remap_maps(cam, spec)[0] is map_x                             # cached


def test_warp_homography_matches_remap_for_pinhole() -> None:
    cam = make_camera(distorted=False)
    spec = BEVSpec(x_range=(0, 40), y_range=(-10, 10), resolution=0.1)
    img = cv2.GaussianBlur(np.random.default_rng(4).integers(0, 255, (720, 1280, 3), dtype=np.uint8), (0, 0), 3)
    a, va = warp_to_bev(img, cam, spec)
    b, _ = warp_to_bev(img, cam, spec, method="homography")
    assert va.mean() > 0.3
    assert np.abs(a[va].astype(int) - b[va].astype(int)).mean() < 1.0


# --------------------------------------------------------------------------- LiDAR
def test_lidar_depth_map_nearest_wins_and_filters() -> None:
    cam = Camera("c", 640, 480, [[500, 0, 320], [0, 500, 240], [0, 0, 1]], T_ego_cam=camera_pose(0, 0, 1.5, 0))
    pts = np.array([[10.0, 0.0, 1.5], [5.0, 0.0, 1.5],      # same pixel (optical axis): 5 m wins
                    [0.3, 0.0, 1.5],                          # closer than min_depth
                    [-5.0, 0.0, 1.5],                         # behind
                    [8.0, 1.0, 0.0]])
    depth = lidar_depth_map(pts, cam, min_range=0.0)
    assert depth[240, 320] == pytest.approx(5.0)
    assert (depth > 0).sum() == 2
    proj = project_lidar(pts, cam, min_range=0.0)
    assert proj.in_image.tolist() == [True, True, False, False, True]
    # min_range is measured from the LiDAR origin (here the ego origin)
    assert project_lidar(pts, cam, min_range=9.0).in_image.tolist() == [True, False, False, False, False]


def test_camera_rejects_bad_calibration() -> None:
    with pytest.raises(CalibrationError, match="'K'"):
        Camera("c", 10, 10, np.eye(2))
    with pytest.raises(CalibrationError, match="T_ego_cam"):
        Camera("c", 10, 10, np.eye(3), T_ego_cam=np.diag([2.0, 1, 1, 1]))
