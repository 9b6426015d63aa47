"""Training data: per-camera items with K-consistent augmentation, and batch collation.

Every geometric augmentation (scale, crop, flip) updates the intrinsics ``K`` exactly like
the image, so the depth head's ``fx / f_ref`` rescale and the 3D targets stay consistent.
Randomness comes from a generator seeded by (seed, epoch, index): the same item is the same
whatever the worker, and a resumed run sees exactly the batches it would have seen.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol

import cv2
import numpy as np
import torch

from perception.data.sample import Boxes2D, Sample
from perception.geometry import Camera


@dataclass
class AugmentConfig:
    enabled: bool = True
    scale: tuple[float, float] = (0.8, 1.3)  # zoom relative to "cover the output"
    flip: float = 0.5
    brightness: float = 0.25
    contrast: float = 0.25
    saturation: float = 0.3
    noise: float = 0.02
    min_box_px: float = 3.0  # smaller boxes (after resize) become ignore regions
    min_visible: float = 0.1  # boxes less visible than this become ignore regions


class CameraSource(Protocol):
    """What :class:`CameraDataset` needs: the (frame, camera) pairs and one camera's Sample."""

    def camera_items(self) -> list[tuple[int, int]]: ...

    def camera_sample(self, index: int, camera: int) -> Sample: ...


def _resize_sparse(depth: np.ndarray, affine: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """Move valid depth pixels through ``u' = a*u + b`` (nearest wins); keeps sparse LiDAR points."""
    H, W = out_hw
    v, u = np.nonzero(depth > 0)
    z = depth[v, u]
    u2 = np.round(affine[0, 0] * u + affine[0, 2]).astype(np.int64)
    v2 = np.round(affine[1, 1] * v + affine[1, 2]).astype(np.int64)
    ok = (u2 >= 0) & (u2 < W) & (v2 >= 0) & (v2 < H)
    out = np.zeros((H, W), np.float32)
    order = np.argsort(-z[ok])  # far first, so nearer points overwrite
    out[v2[ok][order], u2[ok][order]] = z[ok][order]
    return out


def make_item(sample: Sample, cam_index: int, out_hw: tuple[int, int], rng: np.random.Generator | None,
              aug: AugmentConfig | None = None) -> dict[str, Any]:
    """One training item (numpy) from camera ``cam_index`` of ``sample`` at size ``out_hw``."""
    aug = aug or AugmentConfig(enabled=False)
    use_aug = aug.enabled and rng is not None
    img, cam = sample.images[cam_index], sample.cameras[cam_index]
    H0, W0 = img.shape[:2]
    H, W = out_hw
    s = max(W / W0, H / H0)
    if use_aug:
        s *= math.exp(rng.uniform(math.log(aug.scale[0]), math.log(aug.scale[1])))
    Ws, Hs = max(1, round(W0 * s)), max(1, round(H0 * s))
    sx, sy = Ws / W0, Hs / H0
    x0 = (Ws - W) // 2 if not use_aug else int(rng.integers(min(0, Ws - W), max(0, Ws - W) + 1))
    y0 = (Hs - H) // 2 if not use_aug else int(rng.integers(min(0, Hs - H), max(0, Hs - H) + 1))
    resized = cv2.resize(img, (Ws, Hs), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
    canvas = np.full((H, W, 3), 124, np.uint8)
    cx0, cy0 = max(x0, 0), max(y0, 0)
    cx1, cy1 = min(x0 + W, Ws), min(y0 + H, Hs)
    canvas[cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0] = resized[cy0:cy1, cx0:cx1]
    new_cam: Camera = cam.scaled(Ws, Hs).cropped(x0, y0, W, H)
    # pixel-centre affine map u' = sx*u + bx (matches Camera.scaled + cropped)
    affine = np.array([[sx, 0, (0.5 * sx - 0.5) - x0], [0, sy, (0.5 * sy - 0.5) - y0]])

    depth = None
    if sample.depth is not None and sample.depth[cam_index] is not None:
        d = sample.depth[cam_index]
        if sample.extras.get("depth_dense", True):
            dr = cv2.resize(d, (Ws, Hs), interpolation=cv2.INTER_NEAREST)
            depth = np.zeros((H, W), np.float32)
            depth[cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0] = dr[cy0:cy1, cx0:cx1]
        else:
            depth = _resize_sparse(d, affine, (H, W))

    boxes = sample.boxes2d[cam_index] if sample.boxes2d is not None else Boxes2D.empty()
    keep = boxes.labels >= 0
    b = boxes.boxes[keep].astype(np.float64).copy()
    labels = boxes.labels[keep].astype(np.int64)
    ign = (boxes.ignore[keep].astype(bool) if boxes.ignore is not None else np.zeros(len(b), bool))
    vis = boxes.visibility[keep] if boxes.visibility is not None else np.ones(len(b))
    # box edges (continuous coordinates) scale as u' = sx*u - x0
    b[:, [0, 2]] = b[:, [0, 2]] * sx - x0
    b[:, [1, 3]] = b[:, [1, 3]] * sy - y0
    area0 = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    b[:, [0, 2]] = b[:, [0, 2]].clip(0, W)
    b[:, [1, 3]] = b[:, [1, 3]].clip(0, H)
    wh = np.stack([b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], 1)
    area = wh.prod(1)
    inside = (wh > 0.5).all(1) & (area > 0.25 * np.maximum(area0, 1e-6))
    small = (wh < aug.min_box_px).any(1) | (vis < aug.min_visible)
    ign = ign | small

    has3d = np.zeros(len(b), bool)
    centre_cam = np.zeros((len(b), 3))
    size = np.zeros((len(b), 3))
    yaw = np.zeros(len(b))
    if boxes.center_cam is not None and boxes.size is not None and boxes.yaw_cam is not None:
        centre_cam = boxes.center_cam[keep].astype(np.float64)
        size = boxes.size[keep].astype(np.float64)
        yaw = boxes.yaw_cam[keep].astype(np.float64)
        has3d = np.isfinite(centre_cam).all(1) & (centre_cam[:, 2] > 0.1)

    image = canvas
    if use_aug and rng.random() < aug.flip:
        image = image[:, ::-1].copy()
        depth = None if depth is None else depth[:, ::-1].copy()
        b = np.stack([W - b[:, 2], b[:, 1], W - b[:, 0], b[:, 3]], 1)
        K = new_cam.K.copy()
        K[0, 2] = W - 1 - K[0, 2]
        new_cam = Camera(new_cam.name, W, H, K, new_cam.dist, new_cam.T_ego_cam)
        centre_cam = centre_cam * np.array([-1.0, 1.0, 1.0])
        yaw = np.pi - yaw
    if use_aug:
        image = _photometric(image, rng, aug)

    K = new_cam.K
    z = np.where(centre_cam[:, 2] > 1e-6, centre_cam[:, 2], 1.0)
    uv = np.stack([K[0, 0] * centre_cam[:, 0] / z + K[0, 2], K[1, 1] * centre_cam[:, 1] / z + K[1, 2]], 1)
    alpha = yaw - np.arctan2(centre_cam[:, 0], z)
    alpha = np.arctan2(np.sin(alpha), np.cos(alpha))

    pos = inside & ~ign
    return {
        "image": image, "K": K.astype(np.float32), "depth": depth,
        "depth_dense": bool(sample.extras.get("depth_dense", True)),
        "boxes": b[pos].astype(np.float32), "labels": labels[pos],
        "center_uv": uv[pos].astype(np.float32), "obj_depth": centre_cam[pos, 2].astype(np.float32),
        "size": size[pos].astype(np.float32), "alpha": alpha[pos].astype(np.float32), "has3d": has3d[pos],
        "ignore_boxes": b[inside & ign].astype(np.float32),
    }


def _photometric(image: np.ndarray, rng: np.random.Generator, aug: AugmentConfig) -> np.ndarray:
    """Brightness, contrast (about the image mean), saturation (about each pixel's grey value)
    and Gaussian sensor noise on a uint8 RGB image.

    The three colour changes compose into one affine colour map ``x -> A x + t`` (saturation's
    matrix keeps grey, so contrast's offset passes through it unchanged), applied in one
    ``cv2.transform`` pass; the noise is drawn by OpenCV, seeded from ``rng``. About 8x faster
    than the same maths in float numpy, which was half of the data loader's time.
    """
    b = 1.0 + rng.uniform(-aug.brightness, aug.brightness)
    c = 1.0 + rng.uniform(-aug.contrast, aug.contrast)
    s = 1.0 + rng.uniform(-aug.saturation, aug.saturation)
    sat = s * np.eye(3) + (1.0 - s) / 3.0
    mean = b * float(np.mean(cv2.mean(image)[:3]))
    affine = np.concatenate([c * b * sat, np.full((3, 1), (1.0 - c) * mean)], axis=1)
    out = cv2.transform(image, affine)  # uint8 in, uint8 out, rounded and saturated
    if aug.noise > 0:
        sigma = 255.0 * aug.noise * rng.random()
        noise = np.empty(image.shape, np.int16)
        cv2.setRNGSeed(int(rng.integers(2**31 - 1)))
        cv2.randn(noise, 0.0, sigma)
        out = cv2.add(out, noise, dtype=cv2.CV_8U)
    return out


class CameraDataset(torch.utils.data.Dataset):
    """Flattens frames x cameras of a :class:`CameraSource` into training items."""

    def __init__(self, source: CameraSource, size: tuple[int, int], aug: AugmentConfig | None = None,
                 seed: int = 0):
        self.source, self.size, self.aug, self.seed = source, size, aug or AugmentConfig(), seed
        self.items = source.camera_items()
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        frame, cam = self.items[index]
        sample = self.source.camera_sample(frame, cam)
        rng = np.random.default_rng([self.seed, self.epoch, index]) if self.aug.enabled else None
        return make_item(sample, 0, self.size, rng, self.aug)


def collate(items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Stack images/K/depth; pad per-image boxes to the batch maximum (mask marks real ones)."""
    B = len(items)
    M = max([len(it["boxes"]) for it in items] + [1])
    Kn = max([len(it["ignore_boxes"]) for it in items] + [1])
    batch = {
        "images": torch.from_numpy(np.stack([it["image"] for it in items])).permute(0, 3, 1, 2).float()
        .div_(255.0).contiguous(),  # NCHW: see PerceptionNet.forward on channels_last training
        "K": torch.from_numpy(np.stack([it["K"] for it in items])),
        "gt_boxes": torch.zeros(B, M, 4), "gt_labels": torch.full((B, M), -1, dtype=torch.long),
        "gt_mask": torch.zeros(B, M, dtype=torch.bool), "gt_center_uv": torch.zeros(B, M, 2),
        "gt_depth": torch.ones(B, M), "gt_size": torch.ones(B, M, 3), "gt_alpha": torch.zeros(B, M),
        "gt_has3d": torch.zeros(B, M, dtype=torch.bool), "ignore_boxes": torch.full((B, Kn, 4), float("nan")),
    }
    for i, it in enumerate(items):
        n = len(it["boxes"])
        if n:
            batch["gt_boxes"][i, :n] = torch.from_numpy(it["boxes"])
            batch["gt_labels"][i, :n] = torch.from_numpy(it["labels"])
            batch["gt_mask"][i, :n] = True
            batch["gt_center_uv"][i, :n] = torch.from_numpy(it["center_uv"])
            batch["gt_depth"][i, :n] = torch.from_numpy(it["obj_depth"])
            batch["gt_size"][i, :n] = torch.from_numpy(it["size"])
            batch["gt_alpha"][i, :n] = torch.from_numpy(it["alpha"])
            batch["gt_has3d"][i, :n] = torch.from_numpy(it["has3d"])
        k = len(it["ignore_boxes"])
        if k:
            batch["ignore_boxes"][i, :k] = torch.from_numpy(it["ignore_boxes"])
    if any(it["depth"] is not None for it in items):
        # images without depth ground truth (e.g. pseudo-labelled real frames) get an all-invalid map
        H, W = items[0]["image"].shape[:2]
        maps = [it["depth"] if it["depth"] is not None else np.zeros((H, W), np.float32) for it in items]
        batch["depth"] = torch.from_numpy(np.stack(maps))[:, None]
        batch["depth_dense"] = torch.tensor([it["depth"] is not None and it["depth_dense"] for it in items])
    return batch
