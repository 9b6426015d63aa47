"""Camera and weather effects on linear radiance images (torch): fog, depth-aware motion
blur, rain streaks, exposure / white balance / tone mapping, vignetting, lens softness and
sensor noise. Randomness comes from numpy generators seeded per (world, frame, camera), so
output is deterministic and identical on every device.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch
import torch.nn.functional as F


def fog(rad: torch.Tensor, dist: torch.Tensor, density: float, color: torch.Tensor) -> torch.Tensor:
    """Exponential extinction towards ``color`` with distance (m); rad [N, 3], dist [N]."""
    f = torch.exp(-density * dist)[:, None]
    return rad * f + color * (1 - f)


def motion_blur(img: torch.Tensor, flow_x: torch.Tensor, flow_y: torch.Tensor, max_len: int = 9) -> torch.Tensor:
    """Blend towards box blurs along x / y by per-pixel flow magnitude (pixels per exposure).

    img [C, 3, H, W]; flow [C, 1, H, W]. A cheap stand-in for a per-pixel line integral.
    """
    out = img
    for flow, dim in ((flow_x, 3), (flow_y, 2)):
        a = (flow.abs() / max_len).clamp(0, 1)
        if float(a.max()) < 0.05:
            continue
        out = out + (box_blur(out, max_len, dim) - out) * a
    return out


def box_blur(x: torch.Tensor, k: int, dim: int) -> torch.Tensor:
    """Centred box filter of odd length ``k`` along ``dim`` (replicate borders), via a cumulative sum."""
    r = k // 2
    n = x.shape[dim]
    first = x.narrow(dim, 0, 1).expand(*[r if i == dim else -1 for i in range(x.dim())])
    last = x.narrow(dim, n - 1, 1).expand(*[r if i == dim else -1 for i in range(x.dim())])
    xp = torch.cat([first, x, last], dim)
    cs = torch.cumsum(xp, dim)
    zero = torch.zeros_like(cs.narrow(dim, 0, 1))
    cs = torch.cat([zero, cs], dim)
    return (cs.narrow(dim, k, n) - cs.narrow(dim, 0, n)) / k


def soften(img: torch.Tensor, amount: float = 0.5) -> torch.Tensor:
    """Mild optical low-pass (anti-aliases hard primitive edges)."""
    k = torch.tensor([0.25, 0.5, 0.25], device=img.device, dtype=img.dtype)
    C = img.shape[1]
    x = F.pad(img, (1, 1, 1, 1), mode="replicate")
    x = F.conv2d(x, k.view(1, 1, 1, 3).expand(C, 1, 1, 3), groups=C)
    x = F.conv2d(x, k.view(1, 1, 3, 1).expand(C, 1, 3, 1), groups=C)
    return img + (x - img) * amount


def rain_layer(n_cam: int, H: int, W: int, rngs: list[np.random.Generator], intensity: float,
               device: torch.device) -> torch.Tensor:
    """[C, 1, H, W] additive rain streaks (drawn at half resolution with OpenCV lines)."""
    h2, w2 = max(H // 2, 1), max(W // 2, 1)
    layers = []
    for rng in rngs[:n_cam]:
        lay = np.zeros((h2, w2), np.float32)
        n = int(intensity * 0.004 * h2 * w2)
        ang = math.pi / 2 + rng.uniform(-0.25, 0.25)
        xs = rng.uniform(0, w2, n)
        ys = rng.uniform(0, h2, n)
        ln = rng.uniform(4, 14, n) * (h2 / 128)
        br = rng.uniform(0.15, 0.5, n)
        for x, y, L, b in zip(xs, ys, ln, br):
            cv2.line(lay, (int(x), int(y)), (int(x + L * math.cos(ang)), int(y + L * math.sin(ang))), float(b), 1,
                     cv2.LINE_AA)
        layers.append(lay)
    t = torch.as_tensor(np.stack(layers), device=device)[:, None]
    return F.interpolate(t, size=(H, W), mode="bilinear", align_corners=False)


def tone_map(rad: torch.Tensor, exposure: torch.Tensor) -> torch.Tensor:
    """Exponential tone curve + sRGB-like gamma -> [0, 1]. exposure [C, 3, 1, 1] (incl. white balance)."""
    x = 1 - torch.exp(-rad.clamp_min(0) * exposure)
    x = x.clamp(0, 1) ** (1 / 2.2)
    return x + 0.35 * (x * x * (3 - 2 * x) - x)     # mild S-curve for contrast


def vignette(H: int, W: int, strength: float, device: torch.device) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, H, device=device), torch.linspace(-1, 1, W, device=device),
                            indexing="ij")
    return (1 - strength * (xx * xx * 0.6 + yy * yy * 0.4)).clamp(0.3, 1)[None, None]


class NoiseField:
    """Pre-generated Gaussian sensor noise, cropped at random offsets per frame and camera."""

    def __init__(self, seed: int, H: int, W: int, device: torch.device) -> None:
        rng = np.random.default_rng(np.random.SeedSequence([seed, 0x401]))
        self.H, self.W, self.m = H, W, 48
        self.field = torch.as_tensor(rng.standard_normal((3, H + self.m, W + self.m)).astype(np.float32), device=device)

    def sample(self, rng: np.random.Generator) -> torch.Tensor:
        oy, ox = rng.integers(0, self.m, 2)
        return self.field[:, oy:oy + self.H, ox:ox + self.W]
