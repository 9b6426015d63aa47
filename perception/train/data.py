"""Training data: per-camera items with K-consistent augmentation, and batch collation.

Every geometric augmentation (scale, crop, flip) updates the intrinsics ``K`` exactly like
the image, so the depth head's ``fx / f_ref`` rescale and the 3D targets stay consistent.
Randomness comes from a generator seeded by (seed, epoch, index): the same item is the same
whatever the worker, and a resumed run sees exactly the batches it would have seen.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Protocol

import cv2
import numpy as np
import torch

from perception.data.sample import Boxes2D, Sample
from perception.geometry import Camera
from perception.geometry.resize import plan_resize


@dataclass
class AugmentConfig:
    enabled: bool = True
    scale: tuple[float, float] = (0.8, 1.3)  # zoom relative to "cover the output"
    flip: float = 0.5
    brightness: float = 0.25
    contrast: float = 0.25
    saturation: float = 0.3
    noise: float = 0.02
    # camera-response randomisation for sim-to-real (0 = off, the default: old configs train as before)
    gamma: float = 0.0          # gamma drawn in [1 - gamma, 1 + gamma] (tone curve)
    white_balance: float = 0.0  # per-channel gain in [1 - wb, 1 + wb]
    blur: float = 0.0           # probability of a Gaussian or horizontal motion blur (defocus, motion)
    jpeg: float = 0.0           # probability of a JPEG round trip at quality 25-90 (compressed dashcam video)
    vignette: float = 0.0       # up to this darkening at the corners (lens fall-off)
    sharpen: float = 0.0        # probability of an unsharp mask (a camera's ISP sharpening)
    # scene-texture randomisation (0 = off): probability of fine random surface texture in random
    # regions. Rendered surfaces are smooth where real ones (foliage, brick, gravel) are full of fine
    # detail; a model trained on smooth surfaces reads fine detail as "far" (docs/training.md).
    detail: float = 0.0
    # probability of a random convolution (RandConv, Xu et al. 2021): a random 1-7 px 3->3 filter
    # blended with the image, so local texture and colour stop being reliable cues and shape must do
    randconv: float = 0.0
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
    scale = math.exp(rng.uniform(math.log(aug.scale[0]), math.log(aug.scale[1]))) if use_aug else 1.0
    plan = plan_resize(W0, H0, out_hw, scale=scale)
    if use_aug:  # a random window of the scaled frame (grey where it reaches past the frame)
        Ws, Hs = plan.scaled_w, plan.scaled_h
        plan = dataclasses.replace(plan, x0=int(rng.integers(min(0, Ws - W), max(0, Ws - W) + 1)),
                                   y0=int(rng.integers(min(0, Hs - H), max(0, Hs - H) + 1)))
    canvas, new_cam = plan.apply(img), plan.camera(cam)
    sx, sy, x0, y0 = plan.sx, plan.sy, plan.x0, plan.y0
    affine = plan.affine()

    depth = None
    if sample.depth is not None and sample.depth[cam_index] is not None:
        d = sample.depth[cam_index]
        if sample.extras.get("depth_dense", True):
            depth = plan.apply(d, interpolation=cv2.INTER_NEAREST, fill=0).astype(np.float32, copy=False)
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
        if aug.detail and rng.random() < aug.detail:
            dense = depth is not None and bool(sample.extras.get("depth_dense", True))
            image = _surface_detail(image, rng, depth if dense else None)
        if aug.randconv and rng.random() < aug.randconv:
            image = _random_convolution(image, rng)
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
    if aug.gamma or aug.white_balance or aug.blur or aug.jpeg or aug.vignette or aug.sharpen:
        out = _camera_response(out, rng, aug)
    if aug.noise > 0:
        out = _sensor_noise(out, rng, aug.noise)
    return out


def _camera_response(image: np.ndarray, rng: np.random.Generator, aug: AugmentConfig) -> np.ndarray:
    """What a real camera does to a picture and the renderer does not: tone curve (gamma), white
    balance, lens vignetting, defocus or motion blur, sharpening and JPEG compression. Each is
    drawn only when enabled in ``aug`` (the random stream of configs without them is unchanged)."""
    out = image
    if aug.gamma or aug.white_balance:
        g = 1.0 + rng.uniform(-aug.gamma, aug.gamma) if aug.gamma else 1.0
        gains = 1.0 + rng.uniform(-aug.white_balance, aug.white_balance, 3) if aug.white_balance else np.ones(3)
        x = np.arange(256, dtype=np.float64) / 255.0
        lut = np.stack([np.clip(255.0 * gains[c] * x ** g, 0, 255) for c in range(3)], 1).round().astype(np.uint8)
        out = cv2.LUT(out, lut.reshape(256, 1, 3))
    if aug.vignette:
        H, W = out.shape[:2]
        strength = rng.uniform(0.0, aug.vignette)
        yy, xx = np.ogrid[:H, :W]
        r2 = ((xx - (W - 1) / 2) / (W / 2)) ** 2 + ((yy - (H - 1) / 2) / (H / 2)) ** 2   # 2 at the corners
        out = (out * (1.0 - strength * (r2 / 2.0))[..., None].astype(np.float32)).round().clip(0, 255).astype(np.uint8)
    if aug.blur and rng.random() < aug.blur:
        if rng.random() < 0.5:
            out = cv2.GaussianBlur(out, (0, 0), sigmaX=float(rng.uniform(0.4, 1.2)))
        else:
            k = int(rng.integers(3, 8))
            kernel = np.zeros((k, k), np.float32)
            kernel[k // 2, :] = 1.0 / k
            out = cv2.filter2D(out, -1, kernel)
    if aug.sharpen and rng.random() < aug.sharpen:
        # unsharp mask as a camera's image processor applies it: after the optics, before JPEG
        soft = cv2.GaussianBlur(out, (0, 0), sigmaX=float(rng.uniform(0.5, 1.5)))
        amount = float(rng.uniform(0.3, 1.5))
        out = cv2.addWeighted(out, 1.0 + amount, soft, -amount, 0.0)   # uint8, saturated
    if aug.jpeg and rng.random() < aug.jpeg:
        ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(25, 91))])
        if ok:
            out = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    return out


def _surface_detail(image: np.ndarray, rng: np.random.Generator, depth: np.ndarray | None) -> np.ndarray:
    """Fine random texture (band-limited noise, 0.5-2 px, sometimes stretched along one axis,
    3-20 % luminance modulation) over random smooth blobs of the image, multiplicative so that dark
    stays dark. With a dense depth map the sky (no depth) stays smooth, as a real sky is.

    Decorrelates "fine detail" from "far away": on real frames a 1-pixel blur halved rep-s's KITTI
    depth error, i.e. the model had learned from the smooth renderer that detail means distance.
    """
    H, W = image.shape[:2]
    cv2.setRNGSeed(int(rng.integers(2**31 - 1)))
    tex = np.empty((H, W), np.float32)
    cv2.randn(tex, 0.0, 1.0)
    sx = float(rng.uniform(0.5, 2.0))
    sy = sx * float(rng.uniform(0.3, 3.0)) if rng.random() < 0.4 else sx
    tex = cv2.GaussianBlur(tex, (0, 0), sigmaX=sx, sigmaY=sy)
    tex *= 1.0 / (float(tex.std()) + 1e-6)
    blobs = np.empty((max(2, H // 32), max(2, W // 32)), np.float32)
    cv2.randn(blobs, 0.0, 1.0)
    mask = np.clip((cv2.resize(blobs, (W, H), interpolation=cv2.INTER_LINEAR) - rng.uniform(-1.0, 0.5)) * 1.5, 0, 1)
    if depth is not None:
        mask *= depth > 0
    gain = 1.0 + float(rng.uniform(0.03, 0.2)) * mask * tex
    return (image * gain[..., None]).round().clip(0, 255).astype(np.uint8)


RANDCONV_KERNELS = (1, 3, 5, 7)


def _random_convolution(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """RandConv (Xu et al., "Robust and Generalizable Visual Representation Learning via Random
    Convolutions", ICLR 2021): a 3->3 channel filter of size k in {1, 3, 5, 7} with weights drawn
    from N(0, 1 / (3 k^2)) (He initialisation), its output brought to the image's per-channel mean
    and standard deviation, then blended with the image at a random weight. Shapes and geometry
    (so every label) stay; local texture, contrast and colour become random, which is the link
    between rendered texture and depth a model should not rely on.
    """
    k = int(rng.choice(RANDCONV_KERNELS))
    weights = rng.normal(0.0, 1.0 / math.sqrt(3 * k * k), (3, 3, k, k)).astype(np.float32)
    x = image.astype(np.float32)
    out = np.empty_like(x)
    for o in range(3):
        acc = cv2.filter2D(x[..., 0], -1, weights[o, 0], borderType=cv2.BORDER_REFLECT)
        for i in (1, 2):
            acc += cv2.filter2D(x[..., i], -1, weights[o, i], borderType=cv2.BORDER_REFLECT)
        out[..., o] = acc
    mean, std = x.reshape(-1, 3).mean(0), x.reshape(-1, 3).std(0)
    o_mean, o_std = out.reshape(-1, 3).mean(0), out.reshape(-1, 3).std(0)
    out = (out - o_mean) * (std / np.maximum(o_std, 1e-6)) + mean
    a = float(rng.uniform(0.0, 1.0))
    return (a * x + (1.0 - a) * out).round().clip(0, 255).astype(np.uint8)


def _sensor_noise(image: np.ndarray, rng: np.random.Generator, strength: float) -> np.ndarray:
    """Gaussian noise of a random sigma up to ``255 * strength``, drawn by OpenCV seeded from ``rng``."""
    sigma = 255.0 * strength * rng.random()
    noise = np.empty(image.shape, np.int16)
    cv2.setRNGSeed(int(rng.integers(2**31 - 1)))
    cv2.randn(noise, 0.0, sigma)
    return cv2.add(image, noise, dtype=cv2.CV_8U)


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


# ----------------------------------------------------------------------------- video triplets
def make_triplet(frames: list[np.ndarray], K: np.ndarray, up_cam: np.ndarray, out_hw: tuple[int, int],
                 rng: np.random.Generator | None, aug: AugmentConfig | None = None) -> dict[str, Any]:
    """One self-supervised item from frames (t-1, t, t+1) of one camera with intrinsics ``K``.

    The same zoom, crop and flip go to all three frames (a different one per frame would look
    like camera motion) and ``K`` follows them exactly like in :func:`make_item`. Zoom is kept
    >= 1 so no frame gets a padded border, which the photometric loss would try to explain.
    ``frames`` are the clean frames (the photometric loss compares these); ``frames_aug`` get
    one shared colour jitter and independent sensor noise and are what the networks see
    (as Monodepth2: augment the inputs, not the loss targets).
    """
    aug = aug or AugmentConfig(enabled=False)
    use_aug = aug.enabled and rng is not None
    H0, W0 = frames[0].shape[:2]
    H, W = out_hw
    scale = 1.0
    if use_aug:
        lo, hi = max(1.0, aug.scale[0]), max(1.0, aug.scale[1])
        scale = math.exp(rng.uniform(math.log(lo), math.log(hi)))
    plan = plan_resize(W0, H0, out_hw, scale=scale)
    if use_aug:
        plan = dataclasses.replace(plan, x0=int(rng.integers(0, plan.scaled_w - W + 1)),
                                   y0=int(rng.integers(0, plan.scaled_h - H + 1)))
    out = [plan.apply(f) for f in frames]
    cam = plan.camera(Camera("video", W0, H0, K))
    K2, up = cam.K.copy(), np.asarray(up_cam, np.float64).copy()
    if use_aug and rng.random() < aug.flip:
        out = [f[:, ::-1] for f in out]
        K2[0, 2] = W - 1 - K2[0, 2]
        up[0] = -up[0]  # the mirrored world: camera x flips sign
    clean = np.ascontiguousarray(np.stack(out))
    augmented = clean
    if use_aug:
        colour = AugmentConfig(**{**aug.__dict__, "noise": 0.0})
        colour_seed = int(rng.integers(2**63 - 1))
        jittered = [_photometric(f, np.random.default_rng(colour_seed), colour) for f in clean]
        if aug.noise > 0:
            jittered = [_sensor_noise(f, rng, aug.noise) for f in jittered]
        augmented = np.stack(jittered)
    return {"frames": clean, "frames_aug": augmented, "K": K2.astype(np.float32), "up_cam": up.astype(np.float32)}


class VideoTripletDataset(torch.utils.data.Dataset):
    """(t-1, t, t+1) triplets of decoded ``video:`` specs (:class:`perception.train.sources.VideoFrames`).

    Indexed by ``(epoch, index)`` pairs so the augmentation of an item depends only on them (the
    trainer draws these from :func:`selfsup_batches`; a resumed run sees the same items).
    """

    def __init__(self, videos: list[Any], size: tuple[int, int], aug: AugmentConfig | None = None, seed: int = 0):
        self.videos, self.size, self.aug, self.seed = videos, size, aug or AugmentConfig(), seed
        self.items = [(v, t) for v, video in enumerate(videos) for _ in range(video.repeat)
                      for t in video.triplet_indices()]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
        epoch, index = key
        v, t = self.items[index]
        video = self.videos[v]
        frames = [cv2.cvtColor(cv2.imread(str(video.frame_path(i)), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
                  for i in t]
        rng = np.random.default_rng([self.seed, 7919, epoch, index]) if self.aug.enabled else None
        item = make_triplet(frames, video.K, video.up_cam, self.size, rng, self.aug)
        item["height"] = np.float32(video.height)
        return item


def selfsup_batches(n: int, batch: int, seed: int, step: int, rank: int, world: int) -> list[tuple[int, int]]:
    """The ``(epoch, index)`` keys of this process's triplet batch at training step ``step``.

    A pure function of the step: the triplets are walked in a seeded permutation per "video
    epoch" (as :func:`perception.train.trainer.epoch_batches`), independently of the labelled
    data's epochs, so the video can be shorter or longer than an epoch of labelled data."""
    if batch < 1:
        raise ValueError(f"selfsup_batch must be >= 1, got {batch}")
    per_epoch = n // (batch * world)
    if per_epoch < 1:
        raise ValueError(f"video data: {n} triplets, fewer than one self-supervised batch of {batch * world}")
    epoch, j = divmod(step, per_epoch)
    g = torch.Generator().manual_seed(seed * 100003 + 7919 + epoch)
    perm = torch.randperm(n, generator=g).tolist()
    start = j * batch * world + rank * batch
    return [(epoch, i) for i in perm[start:start + batch]]


def collate_triplets(items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Stack triplets: ``frames`` / ``frames_aug`` ``[B, 3 (t-1, t, t+1), 3, H, W]`` in [0, 1],
    ``K`` ``[B, 3, 3]``, ``up_cam`` ``[B, 3]``, ``height`` ``[B]``."""
    def frames(key: str) -> torch.Tensor:
        x = torch.from_numpy(np.stack([it[key] for it in items]))  # B, 3, H, W, C uint8
        return x.permute(0, 1, 4, 2, 3).float().div_(255.0).contiguous()

    return {"frames": frames("frames"), "frames_aug": frames("frames_aug"),
            "K": torch.from_numpy(np.stack([it["K"] for it in items])),
            "up_cam": torch.from_numpy(np.stack([it["up_cam"] for it in items])),
            "height": torch.tensor([float(it["height"]) for it in items])}
