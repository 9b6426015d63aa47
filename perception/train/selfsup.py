"""Self-supervised depth on unlabelled video (Monodepth2, Godard et al. 2019), with metric scale.

For a target frame ``t`` and source frames ``s`` in {t-1, t+1}: a small pose network predicts
the camera motion ``T_s<-t``; the target's predicted depth and ``K`` warp each source into the
target view; the loss is the per-pixel **minimum** over sources of ``0.85 * (1 - SSIM) / 2 +
0.15 * L1`` (robust to occlusion), with **auto-masking** (pixels where the un-warped source
already matches better, e.g. static camera or objects moving with the car, are ignored), plus
edge-aware smoothness of mean-normalised inverse depth.

Monocular video fixes depth only up to scale; the **camera height** fixes it: ground pixels
(lower part of the image, whose lifted points lie near the ground plane) give an estimated
height of the camera above the road, pulled towards the known mounting height from
``T_ego_cam``. Our depth head is already metric (supervised on synthetic data), so this keeps it
metric while adapting to real images.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from perception.nn.blocks import ConvBNAct, make_block


def axis_angle_to_matrix(v: torch.Tensor) -> torch.Tensor:
    """Rodrigues: ``[B, 3]`` axis-angle -> ``[B, 3, 3]`` rotation."""
    theta = v.norm(dim=-1, keepdim=True).clamp(min=1e-8)
    k = v / theta
    K = torch.zeros(v.shape[0], 3, 3, device=v.device, dtype=v.dtype)
    K[:, 0, 1], K[:, 0, 2] = -k[:, 2], k[:, 1]
    K[:, 1, 0], K[:, 1, 2] = k[:, 2], -k[:, 0]
    K[:, 2, 0], K[:, 2, 1] = -k[:, 1], k[:, 0]
    s, c = theta.sin()[..., None], theta.cos()[..., None]
    eye = torch.eye(3, device=v.device, dtype=v.dtype).expand_as(K)
    return eye + s * K + (1 - c) * (K @ K)


class PoseNet(nn.Module):
    """Relative camera motion from two stacked frames (6 channels) -> ``[B, 4, 4]`` T_src<-tgt."""

    def __init__(self, width: int = 32, block: str = "repvgg"):
        super().__init__()
        w = width
        self.encoder = nn.Sequential(
            ConvBNAct(6, w, 3, stride=2), make_block(block, w, w * 2, stride=2),
            make_block(block, w * 2, w * 4, stride=2), make_block(block, w * 4, w * 4, stride=2),
            make_block(block, w * 4, w * 8, stride=2))
        self.head = nn.Conv2d(w * 8, 6, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        self.register_buffer("mean", torch.tensor([0.45] * 6).reshape(1, 6, 1, 1), persistent=False)

    def forward(self, target: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        x = torch.cat([target, source], 1) - self.mean
        feat = self.encoder(x)
        with torch.autocast(x.device.type, enabled=False):  # small angles: keep the pose maths in fp32
            v = 0.01 * self.head(feat.float()).mean((2, 3))  # small motions at init (Monodepth2)
        T = torch.eye(4, device=x.device, dtype=v.dtype).repeat(x.shape[0], 1, 1)
        T[:, :3, :3] = axis_angle_to_matrix(v[:, :3])
        T[:, :3, 3] = v[:, 3:]
        return T


def backproject(depth: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """``[B, 1, H, W]`` z-depth -> ``[B, 3, H*W]`` camera-frame points (pixel centres at integers)."""
    B, _, H, W = depth.shape
    v, u = torch.meshgrid(torch.arange(H, device=depth.device, dtype=depth.dtype),
                          torch.arange(W, device=depth.device, dtype=depth.dtype), indexing="ij")
    pix = torch.stack([u, v, torch.ones_like(u)], 0).reshape(1, 3, -1)
    rays = torch.linalg.inv(K.to(depth.dtype)) @ pix
    return rays * depth.reshape(B, 1, -1)


def warp(source: torch.Tensor, depth: torch.Tensor, K: torch.Tensor, T_src_tgt: torch.Tensor) -> torch.Tensor:
    """Sample ``source`` at the projections of the target pixels lifted with ``depth``."""
    B, _, H, W = source.shape
    pts = backproject(depth, K)
    pts = T_src_tgt[:, :3, :3] @ pts + T_src_tgt[:, :3, 3:]
    uvw = K.to(pts.dtype) @ pts
    uv = uvw[:, :2] / uvw[:, 2:].clamp(min=1e-3)
    gx = uv[:, 0] / (W - 1) * 2 - 1
    gy = uv[:, 1] / (H - 1) * 2 - 1
    grid = torch.stack([gx, gy], -1).reshape(B, H, W, 2)
    return F.grid_sample(source, grid, mode="bilinear", padding_mode="border", align_corners=True)


def ssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-pixel SSIM over 3x3 windows (as Monodepth2), ``[B, C, H, W]``."""
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    x, y = F.pad(x, (1, 1, 1, 1), mode="reflect"), F.pad(y, (1, 1, 1, 1), mode="reflect")
    mx, my = F.avg_pool2d(x, 3, 1), F.avg_pool2d(y, 3, 1)
    sx = F.avg_pool2d(x * x, 3, 1) - mx ** 2
    sy = F.avg_pool2d(y * y, 3, 1) - my ** 2
    sxy = F.avg_pool2d(x * y, 3, 1) - mx * my
    n = (2 * mx * my + c1) * (2 * sxy + c2)
    d = (mx ** 2 + my ** 2 + c1) * (sx + sy + c2)
    return (n / d).clamp(0, 1)


def photometric_error(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``0.85 * (1 - SSIM) / 2 + 0.15 * L1``, averaged over channels -> ``[B, 1, H, W]``."""
    l1 = (pred - target).abs().mean(1, keepdim=True)
    return 0.85 * ((1 - ssim(pred, target)) / 2).mean(1, keepdim=True) + 0.15 * l1


def smoothness(depth: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """Edge-aware smoothness of mean-normalised inverse depth."""
    disp = 1.0 / depth.clamp(min=1e-3)
    disp = disp / disp.mean((2, 3), keepdim=True).clamp(min=1e-6)
    dx = (disp[..., :, 1:] - disp[..., :, :-1]).abs()
    dy = (disp[..., 1:, :] - disp[..., :-1, :]).abs()
    ix = (image[..., :, 1:] - image[..., :, :-1]).abs().mean(1, keepdim=True)
    iy = (image[..., 1:, :] - image[..., :-1, :]).abs().mean(1, keepdim=True)
    return (dx * torch.exp(-ix)).mean() + (dy * torch.exp(-iy)).mean()


def camera_height_loss(depth: torch.Tensor, K: torch.Tensor, up_cam: torch.Tensor, height: torch.Tensor,
                       region: float = 0.25) -> tuple[torch.Tensor, torch.Tensor]:
    """Pull the camera height seen through the predicted depth towards the known height.

    Pixels of the bottom-centre ``region`` (fraction of height and of width) are lifted;
    their median distance below the camera along the ground normal ``up_cam`` (``[B, 3]``, the
    ego +z axis in camera coordinates) is the estimated height. Returns (|log ratio|, heights).
    """
    B, _, H, W = depth.shape
    y0, x0, x1 = int(H * (1 - region)), int(W * (0.5 - region)), int(W * (0.5 + region))
    pts = backproject(depth, K).reshape(B, 3, H, W)[:, :, y0:, x0:x1].reshape(B, 3, -1)
    below = -(up_cam[:, :, None].to(pts.dtype) * pts).sum(1)  # distance below the camera
    est = below.median(dim=1).values.clamp(min=1e-3)
    return (torch.log(est) - torch.log(height.to(est.dtype))).abs().mean(), est


def selfsup_depth_loss(target: torch.Tensor, sources: list[torch.Tensor], depth: torch.Tensor, K: torch.Tensor,
                       poses: list[torch.Tensor], up_cam: torch.Tensor | None = None,
                       height: torch.Tensor | None = None, smooth_weight: float = 1e-3,
                       height_weight: float = 0.1, generator: torch.Generator | None = None
                       ) -> dict[str, torch.Tensor]:
    """Monodepth2 loss for one target frame: min reprojection + auto-mask + smoothness (+ height).

    ``generator`` draws the tie-breaking noise (default: the global RNG); the trainer passes
    one seeded by the step so that resuming does not depend on the global RNG stream."""
    reproj = torch.cat([photometric_error(warp(s, depth, K, T), target) for s, T in zip(sources, poses)], 1)
    identity = torch.cat([photometric_error(s, target) for s in sources], 1)
    noise = torch.randn(identity.shape, generator=generator, device=identity.device, dtype=identity.dtype)
    identity = identity + 1e-5 * noise  # break ties as Monodepth2 does
    combined = torch.cat([identity, reproj], 1)
    best, idx = combined.min(1)
    mask = (idx >= len(sources)).float()  # auto-mask: the warp must beat the un-warped source
    out = {"photo": (best * mask).sum() / mask.sum().clamp(min=1.0),
           "smooth": smooth_weight * smoothness(depth, target), "automask": mask.mean().detach()}
    if up_cam is not None and height is not None:
        h_loss, est = camera_height_loss(depth, K, up_cam, height)
        out["height"] = height_weight * h_loss
        out["est_height"] = est.mean().detach()
    return out


def triplet_loss(batch: dict[str, torch.Tensor], depth: torch.Tensor, poses: torch.Tensor,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """The trainer's self-supervised term for a batch of :func:`perception.train.data.collate_triplets`.

    ``depth`` ``[B, 1, H, W]`` is the prediction for the (augmented) target frames and ``poses``
    ``[2B, 4, 4]`` the PoseNet outputs for (target, t-1) then (target, t+1). Everything is cast
    to fp32 here (photometric differences and the warp are too fine for bf16). Returns (total,
    parts for the log): ``selfsup`` = photo + smooth + height, plus the auto-mask ratio and the
    camera height seen through the predicted depth (``ss_est_height``, metres)."""
    frames = batch["frames"].float()
    B = frames.shape[0]
    poses = poses.float()
    terms = selfsup_depth_loss(frames[:, 1], [frames[:, 0], frames[:, 2]], depth.float(), batch["K"].float(),
                               [poses[:B], poses[B:]], batch["up_cam"].float(), batch["height"].float(),
                               generator=generator)
    total = terms["photo"] + terms["smooth"] + terms["height"]
    parts = {"selfsup": float(total.detach()), "ss_photo": float(terms["photo"].detach()),
             "ss_smooth": float(terms["smooth"].detach()), "ss_height": float(terms["height"].detach()),
             "ss_automask": float(terms["automask"]), "ss_est_height": float(terms["est_height"])}
    return total, parts
