"""Camera and weather effects: fog (torch, on radiance), exposure / white balance /
vignetting / tone curve (torch lookup table), and the OpenCV/numpy helpers the renderer uses
on the uint8 images (rain streaks, sensor noise). Lens softness and depth-aware motion blur are
applied in :meth:`perception.data.synth.render.Renderer._camera_effects`. Randomness comes
from numpy generators seeded per (world, frame, camera), so output is deterministic and
identical on every device.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch


def fog(rad: torch.Tensor, dist: torch.Tensor, density: float, color: torch.Tensor) -> torch.Tensor:
    """Exponential extinction towards ``color`` with distance (m); rad [N, 3], dist [N]."""
    f = torch.exp(-density * dist)[:, None]
    return rad * f + color * (1 - f)


def rain_layer(H: int, W: int, rng: np.random.Generator, intensity: float) -> np.ndarray:
    """uint8 HxWx3 additive rain streaks (drawn at half resolution with OpenCV lines)."""
    h2, w2 = max(H // 2, 1), max(W // 2, 1)
    lay = np.zeros((h2, w2), np.uint8)
    n = int(intensity * 0.004 * h2 * w2)
    ang = math.pi / 2 + rng.uniform(-0.25, 0.25)
    xs = rng.uniform(0, w2, n)
    ys = rng.uniform(0, h2, n)
    ln = rng.uniform(4, 14, n) * (h2 / 128)
    br = rng.uniform(25, 75, n)
    for x, y, L, b in zip(xs, ys, ln, br):
        cv2.line(lay, (int(x), int(y)), (int(x + L * math.cos(ang)), int(y + L * math.sin(ang))), int(b), 1, cv2.LINE_AA)
    lay = cv2.resize(lay, (W, H), interpolation=cv2.INTER_LINEAR)
    return cv2.merge([lay, lay, lay])


_LUT: dict[str, torch.Tensor] = {}
_LUT_N, _LUT_VMAX = 4096, 12.0


def _tone_curve(v: torch.Tensor) -> torch.Tensor:
    x = 1 - torch.exp(-v.clamp_min(0))
    x = x.clamp(0, 1) ** (1 / 2.2)
    return x + 0.35 * (x * x * (3 - 2 * x) - x)     # mild S-curve for contrast


def tone_map_u8(rad: torch.Tensor, gain: torch.Tensor) -> torch.Tensor:
    """Exponential tone curve + sRGB-like gamma + mild S-curve -> uint8, for radiance ``rad``
    times ``gain`` (exposure, white balance, vignetting; broadcastable).

    Evaluated through a lookup table indexed by sqrt(v) (fine steps in the shadows), which is
    several times cheaper than evaluating the curve.
    """
    key = str(rad.device)
    if key not in _LUT:
        u = torch.linspace(0, 1, _LUT_N, dtype=torch.float64)
        _LUT[key] = (_tone_curve(u * u * _LUT_VMAX) * 255 + 0.5).clamp(0, 255).to(torch.uint8).to(rad.device)
    v = (rad * gain).clamp_(0, _LUT_VMAX)
    idx = torch.sqrt_(v.mul_((_LUT_N - 1) ** 2 / _LUT_VMAX)).add_(0.5).to(torch.int32)
    return _LUT[key].index_select(0, idx.view(-1)).view(v.shape)


def add_noise(img: np.ndarray, noise: np.ndarray, sigma: float) -> np.ndarray:
    """uint8 image + Gaussian sensor noise of ``sigma`` grey levels (``noise`` is N(0, 1) int8-scaled by 16)."""
    out = img.astype(np.int16)
    out += (noise.astype(np.int16) * int(round(sigma * 16))) >> 8
    return np.clip(out, 0, 255).astype(np.uint8)


def vignette(H: int, W: int, strength: float, device: torch.device) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, H, device=device), torch.linspace(-1, 1, W, device=device),
                            indexing="ij")
    return (1 - strength * (xx * xx * 0.6 + yy * yy * 0.4)).clamp(0.3, 1)[None, None]


class NoiseField:
    """Pre-generated Gaussian sensor noise (int8, N(0, 1) * 16), cropped at random offsets per
    frame and camera (deterministic, device independent)."""

    def __init__(self, seed: int, H: int, W: int) -> None:
        rng = np.random.default_rng(np.random.SeedSequence([seed, 0x401]))
        self.H, self.W, self.m = H, W, 48
        self.field = np.clip(rng.standard_normal((H + self.m, W + self.m, 3)) * 16, -127, 127).astype(np.int8)

    def sample(self, rng: np.random.Generator) -> np.ndarray:
        oy, ox = rng.integers(0, self.m, 2)
        return self.field[oy:oy + self.H, ox:ox + self.W]
