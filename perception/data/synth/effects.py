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


def _pad(x: torch.Tensor, r: int, dim: int) -> torch.Tensor:
    n = x.shape[dim]
    first = x.narrow(dim, 0, 1).expand(*[r if i == dim else -1 for i in range(x.dim())])
    last = x.narrow(dim, n - 1, 1).expand(*[r if i == dim else -1 for i in range(x.dim())])
    return torch.cat([first, x, last], dim)


def box_blur(x: torch.Tensor, k: int, dim: int) -> torch.Tensor:
    """Centred box filter of odd length ``k`` along ``dim`` (replicate borders): sum of shifted views."""
    r = k // 2
    n = x.shape[dim]
    xp = _pad(x, r, dim)
    acc = xp.narrow(dim, 0, n).clone()
    for j in range(1, k):
        acc += xp.narrow(dim, j, n)
    return acc * (1.0 / k)


def soften(img: torch.Tensor, amount: float = 0.5) -> torch.Tensor:
    """Mild optical low-pass (anti-aliases hard primitive edges)."""
    out = img
    for dim in (3, 2):
        n = out.shape[dim]
        xp = _pad(out, 1, dim)
        out = (xp.narrow(dim, 0, n) + xp.narrow(dim, 2, n)) * 0.25 + out * 0.5
    return img + (out - img) * amount


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


_LUT: dict[str, torch.Tensor] = {}
_LUT_N, _LUT_VMAX = 4096, 12.0


def _tone_curve(v: torch.Tensor) -> torch.Tensor:
    x = 1 - torch.exp(-v.clamp_min(0))
    x = x.clamp(0, 1) ** (1 / 2.2)
    return x + 0.35 * (x * x * (3 - 2 * x) - x)     # mild S-curve for contrast


def tone_map(rad: torch.Tensor, exposure: torch.Tensor) -> torch.Tensor:
    """Exponential tone curve + sRGB-like gamma + mild S-curve -> [0, 1].

    exposure [C, 3, 1, 1] (incl. white balance). Evaluated through a lookup table indexed by
    sqrt(v) (fine steps in the shadows), which is several times cheaper than the curve.
    """
    key = str(rad.device)
    if key not in _LUT:
        u = torch.linspace(0, 1, _LUT_N, dtype=torch.float64)
        _LUT[key] = _tone_curve(u * u * _LUT_VMAX).float().to(rad.device)
    v = (rad * exposure).clamp(0, _LUT_VMAX)
    idx = (torch.sqrt(v * (1.0 / _LUT_VMAX)) * (_LUT_N - 1) + 0.5).long()
    return _LUT[key].index_select(0, idx.reshape(-1)).view(v.shape)


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
