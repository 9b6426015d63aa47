"""Blur consistency: real frames without depth labels teach the depth head to ignore crispness.

The shipped models learned depth on rendered images, which are softer than any real camera's, and
on real frames they read crisp fine detail (hedges, tree crowns, brick) as distance: a 1-pixel
Gaussian blur of the input takes rep-s's KITTI 000008 depth error from about 0.35 to 0.25
(``python benchmarks/depth_texture_probe.py``), but blurring the input at inference loses the
small cars (nuScenes car AP50 0.29 -> 0.11). So the blurred view is used as a teacher, for depth
only: on each training image without dense depth labels (the teacher-labelled real frames), the
depth predicted from the image as it is is pulled towards the EMA model's (or a frozen
``blur_teacher``'s) depth of the same image blurred by :data:`BLUR_SIGMA` pixels (no gradient
through the target), in log space up to a scale per image, over the pixels where the target is a
surface within ``max_depth`` (not the sky). Detection still sees the crisp image, and the synthetic frames keep their metric labels,
which set the scale.

Off unless ``loss.blur_consistency`` (its weight) is > 0 in the training config.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["BLUR_SIGMA", "gaussian_blur", "blur_consistency_loss"]

BLUR_SIGMA = 1.0  # pixels of the network input: the texture probe's "blur 1 px"


def gaussian_blur(images: torch.Tensor, sigma: float = BLUR_SIGMA) -> torch.Tensor:
    """Separable Gaussian blur of ``[B, C, H, W]`` images (reflected borders, radius 3 sigma)."""
    if sigma <= 0:
        return images
    r = max(1, int(3 * sigma + 0.5))
    x = torch.arange(-r, r + 1, dtype=torch.float32, device=images.device)
    g = torch.exp(-x * x / (2 * sigma * sigma))
    g = (g / g.sum()).to(images.dtype)
    C = images.shape[1]
    kx = g.view(1, 1, 1, -1).expand(C, 1, 1, -1)
    y = F.conv2d(F.pad(images, (r, r, 0, 0), mode="reflect"), kx, groups=C)
    return F.conv2d(F.pad(y, (0, 0, r, r), mode="reflect"), kx.transpose(2, 3), groups=C)


def blur_consistency_loss(pred: torch.Tensor, target: torch.Tensor, max_depth: float = 80.0,
                          affine: bool = False) -> torch.Tensor:
    """Scale-invariant log-depth L1 between ``pred`` and ``target`` (``[B, 1, H, W]`` metres, no
    gradient through ``target``): per image, the mean of ``|r - median(r)|`` with
    ``r = log pred - log target`` over the pixels whose target is in ``(0, max_depth)``, averaged
    over the images that have such pixels; 0 when none has. ``affine``: each side's log depth is
    also divided by its mean absolute deviation from its median first, so the term cannot change
    the spread of depths either, only their pattern.

    Scale-invariant because the blurred view's scale is not better, and a model pulled towards
    its own blurred depth drifts: a blur reads nearer, so each step's target is a little nearer
    than the last (with a plain log L1 the measured run ended 1.5-1.8x too near on KITTI 000008
    and nuScenes). The synthetic frames' metric labels set the scale; this term only shapes."""
    target = target.detach().float()
    pred = pred.float().clamp_min(1e-3)
    losses = []
    for p, t in zip(pred, target):
        valid = torch.isfinite(t) & (t > 0) & (t < max_depth)
        if bool(valid.any()):
            lp, lt = p[valid].log(), t[valid].log()
            if affine:
                lp, lt = lp - lp.detach().median(), lt - lt.median()
                lp = lp / (lp.detach().abs().mean() + 1e-6)
                lt = lt / (lt.abs().mean() + 1e-6)
            r = lp - lt
            losses.append((r - r.detach().median()).abs().mean())
    return torch.stack(losses).mean() if losses else pred.sum() * 0.0
