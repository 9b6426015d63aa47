"""Self-supervised depth: the warp is exact for the true depth and pose, the loss prefers the
true depth, and the camera-height term measures the height of a flat road."""

from __future__ import annotations

import math

import torch

from perception.train.selfsup import (
    PoseNet,
    axis_angle_to_matrix,
    camera_height_loss,
    photometric_error,
    selfsup_depth_loss,
    warp,
)

H, W, F_PX, CAM_H = 48, 64, 40.0, 1.5


def _road_depth() -> torch.Tensor:
    """z-depth of a flat road below a level camera, sky (above the horizon) far away."""
    v = torch.arange(H, dtype=torch.float32)[:, None].expand(H, W)
    dv = v - (H - 1) / 2
    depth = torch.where(dv > 0.5, CAM_H * F_PX / dv.clamp(min=0.5), torch.full_like(dv, 100.0))
    return depth.clamp(max=100.0)[None, None]


def _K() -> torch.Tensor:
    return torch.tensor([[[F_PX, 0, (W - 1) / 2], [0, F_PX, (H - 1) / 2], [0, 0, 1]]])


def test_rotation_is_orthonormal():
    R = axis_angle_to_matrix(torch.tensor([[0.1, -0.2, 0.3]]))
    assert torch.allclose(R @ R.transpose(1, 2), torch.eye(3)[None], atol=1e-6)
    Rz = axis_angle_to_matrix(torch.tensor([[0.0, 0.0, math.pi / 2]]))
    assert torch.allclose(Rz[0] @ torch.tensor([1.0, 0, 0]), torch.tensor([0.0, 1, 0]), atol=1e-6)


def test_identity_pose_warp_returns_the_source():
    src = torch.rand(1, 3, H, W)
    out = warp(src, _road_depth(), _K(), torch.eye(4)[None])
    assert torch.allclose(out, src, atol=1e-4)


def test_true_depth_beats_wrong_depth_on_a_textured_road():
    torch.manual_seed(0)
    depth, K = _road_depth(), _K()
    texture = torch.rand(1, 3, H, W)
    T = torch.eye(4)[None].clone()
    T[0, 2, 3] = -1.0  # the source camera is 1 m behind... the target moved forward by 1 m
    source = texture
    target = warp(source, depth, K, T)  # what the target camera sees of the same world
    good = selfsup_depth_loss(target, [source], depth, K, [T])["photo"]
    bad = selfsup_depth_loss(target, [source], depth * 2.0, K, [T])["photo"]
    assert good < 0.5 * bad


def test_camera_height_from_a_flat_road():
    up_cam = torch.tensor([[0.0, -1.0, 0.0]])  # level camera: ego up = camera -y
    loss, est = camera_height_loss(_road_depth(), _K(), up_cam, torch.tensor([CAM_H]))
    assert abs(est.item() - CAM_H) < 0.05 and loss.item() < 0.03
    loss2, est2 = camera_height_loss(_road_depth() * 1.5, _K(), up_cam, torch.tensor([CAM_H]))
    assert abs(est2.item() - 1.5 * CAM_H) < 0.1 and loss2 > 0.3


def test_posenet_starts_near_identity_and_is_differentiable():
    net = PoseNet(width=8)
    a, b = torch.rand(2, 3, H, W), torch.rand(2, 3, H, W)
    T = net(a, b)
    assert torch.allclose(T, torch.eye(4).expand(2, 4, 4), atol=1e-6)
    photometric_error(warp(b, _road_depth().expand(2, 1, H, W), _K().expand(2, 3, 3), T), a).mean().backward()
    assert net.head.weight.grad is not None and net.head.weight.grad.abs().sum() > 0
