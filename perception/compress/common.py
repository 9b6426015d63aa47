"""Shared plumbing of the compression methods: proxy data, a small fit loop, proxy metrics,
size/FLOP/latency measurement and the ``report.json`` writer.

**Proxy task.** Trained shipped models and ``perception eval`` do not exist yet, so every
method can run on a *proxy task*: hand-made camera images (coloured cars and pedestrians on a
textured ground with exact boxes and a dense ground-plane depth map, see
:func:`proxy_samples`), at a small input size (64x96 by default). Its metrics are
``proxy_map50`` (VOC all-point AP at IoU 0.5, averaged over the classes present) and
``proxy_abs_rel`` (mean |d - d*| / d* over valid pixels). They are *proxies*: they rank
compressed variants of the same tiny model against each other, they say nothing about the
accuracy of rep-s on real data. Real sample folders or ``synth:`` specs can be used instead
(``data=[...]``), with the same metrics computed on a held-out slice.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import torch
from torch import nn

from perception.data.sample import Boxes2D, Sample
from perception.geometry import Camera, camera_pose
from perception.nn.backbone import BackboneConfig
from perception.nn.model import PerceptionNet
from perception.nn.neck import NeckConfig
from perception.train.data import AugmentConfig, collate, make_item
from perception.train.losses import Criterion, PerceptionLoss
from perception.utils.profiling import count_flops, environment, summarize, time_calls

log = logging.getLogger(__name__)

Batch = dict[str, torch.Tensor]
LATENCY_ITERS = 10  # timed forwards per latency figure (tests lower it)

# The deliberately tiny PerceptionNet of `perception compress --tiny` (smoke runs; the tests use
# it too): a few hundred k parameters, ~0.1 s per step.
TINY_OVERRIDES: dict[str, Any] = dict(
    backbone=BackboneConfig(widths=(8, 16, 16, 32, 32), depths=(1, 1, 1, 1)),
    neck=NeckConfig(widths=(8, 16, 16, 32), depth=1), head_width=16, depth_width=8)


# ---------------------------------------------------------------------------------------- data
def proxy_sample(seed: int, width: int = 96, height: int = 64) -> Sample:
    """One two-camera frame of the proxy task: cars (label 0, wide) and pedestrians (label 3,
    tall) as flat-shaded boxes standing on a textured ground plane, exact 2D/3D labels and depth."""
    rng = np.random.default_rng(seed)
    cams, images, depths, boxes2d = [], [], [], []
    f = 0.8 * width
    for c, yaw in enumerate((0.0, np.pi)):
        cam = Camera(f"cam{c}", width, height, [[f, 0, width / 2], [0, f, height / 2], [0, 0, 1]],
                     T_ego_cam=camera_pose(0, 0, 1.5, yaw))
        img = np.empty((height, width, 3), np.uint8)
        img[: height // 2] = rng.integers(140, 230, 3)  # sky
        ground = rng.integers(60, 120) + rng.integers(-15, 15, (height - height // 2, width, 1))
        img[height // 2:] = np.clip(ground, 0, 255)
        depth = np.zeros((height, width), np.float32)
        rows = np.arange(height // 2 + 1, height)
        depth[height // 2 + 1:] = (1.5 * f / (rows - height / 2 + 0.5))[:, None]
        objs = sorted(({"z": rng.uniform(5, 18), "x": rng.uniform(-4, 4), "ped": rng.random() < 0.35}
                       for _ in range(rng.integers(1, 4))), key=lambda o: -o["z"])  # far first
        boxes, labels, centres, sizes, yaws = [], [], [], [], []
        for o in objs:
            l, w, h = (0.6, 0.6, 1.75) if o["ped"] else (4.2, 1.8, 1.5)
            z, x = o["z"], o["x"]
            u, v_bottom = f * x / z + width / 2, f * 1.5 / z + height / 2
            bw, bh = f * w / z, f * h / z
            box = [u - bw / 2, v_bottom - bh, u + bw / 2, v_bottom]
            x0, y0, x1, y1 = (int(round(max(0, min(b, lim)))) for b, lim in zip(box, (width, height) * 2))
            if x1 - x0 < 3 or y1 - y0 < 3:
                continue
            colour = rng.integers(0, 255, 3)
            img[y0:y1, x0:x1] = colour
            img[y0:y0 + max(1, (y1 - y0) // 4), x0:x1] = colour // 2  # a darker "roof"/"head" band
            depth[y0:y1, x0:x1] = z
            boxes.append([x0, y0, x1, y1])
            labels.append(3 if o["ped"] else 0)
            centres.append([x, 1.5 - h / 2, z + l / 2])
            sizes.append([l, w, h])
            yaws.append(np.pi / 2)
        cams.append(cam)
        images.append(img)
        depths.append(depth)
        boxes2d.append(Boxes2D(np.array(boxes, np.float32).reshape(-1, 4), np.array(labels, np.int64),
                               center_cam=np.array(centres).reshape(-1, 3), size=np.array(sizes).reshape(-1, 3),
                               yaw_cam=np.array(yaws), visibility=np.ones(len(boxes))))
    return Sample(images=images, cameras=cams, depth=depths, boxes2d=boxes2d, frame_id=str(seed))


@dataclass
class ProxyData:
    """Collated train and validation tensors held in memory (the proxy sets are tiny)."""

    train: Batch
    val: Batch
    size: tuple[int, int]
    description: str

    def batches(self, batch: int, steps: int, seed: int = 0) -> Iterable[Batch]:
        """``steps`` random batches (with replacement across epochs) from the train split."""
        n = self.train["images"].shape[0]
        g = torch.Generator().manual_seed(seed)
        perm: list[int] = []
        for _ in range(steps):
            if len(perm) < batch:
                perm += torch.randperm(n, generator=g).tolist()
            idx, perm = perm[:batch], perm[batch:]
            yield {k: v[idx] for k, v in self.train.items()}


def _collate_samples(samples: Iterable[Sample], size: tuple[int, int]) -> Batch:
    items = [make_item(s, c, size, None, AugmentConfig(enabled=False)) for s in samples
             for c in range(len(s.images))]
    return collate(items)


def load_data(data: list[str] | None = None, size: tuple[int, int] = (64, 96), frames: int = 48,
              val_frames: int = 16, seed: int = 0) -> ProxyData:
    """The proxy task (``data=None``) or real sample folders / ``synth:`` specs.

    Real data: the last ``val_frames`` frames of the first source are held out for the metrics.
    """
    if not data:
        train = _collate_samples((proxy_sample(seed * 100000 + i) for i in range(frames)), size)
        val = _collate_samples((proxy_sample(seed * 100000 + 50000 + i) for i in range(val_frames)), size)
        return ProxyData(train, val, size, f"proxy task: {frames} train / {val_frames} val two-camera frames "
                                           f"at {size[0]}x{size[1]} (seed {seed})")
    from perception.data.sample_folder import SampleFolder
    from perception.train.sources import resolve_data

    folders = [SampleFolder(p if isinstance(p, str) else p[0]) for p in resolve_data(data, size, render=True)]
    if len(folders[0]) <= val_frames:
        raise ValueError(f"{data[0]}: {len(folders[0])} frames, need more than val_frames={val_frames}")
    n_val = len(folders[0]) - val_frames
    val = _collate_samples((folders[0][i] for i in range(n_val, len(folders[0]))), size)
    train_samples = [folders[0][i] for i in range(min(n_val, frames))]
    for f in folders[1:]:
        train_samples += [f[i] for i in range(min(len(f), frames))]
    return ProxyData(_collate_samples(train_samples, size), val, size, f"{data}: {len(train_samples)} train / "
                                                                        f"{val_frames} val frames")


# ---------------------------------------------------------------------------------------- training
@dataclass
class FitConfig:
    steps: int = 300
    batch: int = 8
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup: int = 20
    seed: int = 0
    grad_clip: float = 10.0
    amp: str = "none"  # "bf16": autocast the forward (about 1.9x faster on CPUs with native bf16)


@dataclass
class Hooks:
    """Optional additions to :func:`fit`: an extra loss term and a callback after each step."""

    extra_loss: Callable[[nn.Module, dict[str, torch.Tensor], Batch], torch.Tensor] | None = None
    after_step: Callable[[nn.Module, int], None] | None = None
    wrap_criterion: Callable[[Criterion, nn.Module], Criterion] | None = None
    log: list[dict[str, float]] = field(default_factory=list)


# step, total steps, loss: set by the CLI (a progress bar) for the duration of a run
ProgressFn = Callable[[int, int, float], None]
_progress: ProgressFn | None = None


@contextmanager
def report_progress(fn: ProgressFn) -> Iterator[None]:
    """Call ``fn(step, steps, loss)`` after every step of every :func:`fit` inside the block."""
    global _progress
    previous, _progress = _progress, fn
    try:
        yield
    finally:
        _progress = previous


def fit(model: PerceptionNet, data: ProxyData, cfg: FitConfig, hooks: Hooks | None = None,
        params: Iterable[nn.Parameter] | None = None) -> PerceptionNet:
    """Train ``model`` in place with AdamW + warm-up/cosine on ``data`` (the proxy trainer).

    It uses the project's :class:`PerceptionLoss` and the same batch layout as
    :func:`perception.train.trainer.train`; it has no EMA, checkpoints or DDP because the
    proxy runs are seconds long. Real-scale runs use the main trainer (see ``docs/compression.md``).
    """
    hooks = hooks or Hooks()
    torch.manual_seed(cfg.seed)
    model.train()
    params = [p for p in (params if params is not None else model.parameters()) if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    criterion: Criterion = PerceptionLoss(model.num_classes, model.cfg.f_ref)
    if hooks.wrap_criterion is not None:
        criterion = hooks.wrap_criterion(criterion, model)
    anchors, strides = model.anchors(*data.size)
    t0 = time.monotonic()
    for step, batch in enumerate(data.batches(cfg.batch, cfg.steps, cfg.seed)):
        t = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
        lr = cfg.lr * ((step + 1) / max(1, cfg.warmup) if step < cfg.warmup
                       else 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * t)))
        for g in opt.param_groups:
            g["lr"] = lr
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.amp == "bf16"):
            outputs = model(batch["images"], batch["K"])
        outputs = {k: v.float() for k, v in outputs.items()}
        loss, parts = criterion(outputs, anchors, strides, batch)
        if hooks.extra_loss is not None:
            extra = hooks.extra_loss(model, outputs, batch)
            parts["extra"] = float(extra.detach())
            loss = loss + extra
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss is {float(loss)} at step {step}: {parts}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        if hooks.after_step is not None:
            hooks.after_step(model, step)
        if _progress is not None:
            _progress(step + 1, cfg.steps, float(loss.detach()))
        if step % 50 == 0 or step == cfg.steps - 1:
            hooks.log.append({"step": step, "loss": float(loss.detach()), **parts})
            log.debug("step %d loss %.4f %s", step, float(loss.detach()), parts)
    log.info("fit: %d steps in %.1f s", cfg.steps, time.monotonic() - t0)
    return model.eval()


# ---------------------------------------------------------------------------------------- metrics
def _iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area = lambda x: (x[:, 2] - x[:, 0]).clamp(min=0) * (x[:, 3] - x[:, 1]).clamp(min=0)  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None] - inter).clamp(min=1e-9)


def average_precision(tp: np.ndarray, scores: np.ndarray, n_gt: int) -> float:
    """VOC all-point interpolated AP from per-detection true-positive flags and scores."""
    if n_gt == 0:
        return float("nan")
    if len(tp) == 0:
        return 0.0
    order = np.argsort(-scores, kind="stable")
    tp = tp[order].astype(np.float64)
    ctp, cfp = np.cumsum(tp), np.cumsum(1 - tp)
    recall = ctp / n_gt
    precision = ctp / np.maximum(ctp + cfp, 1e-9)
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    i = np.nonzero(mrec[1:] != mrec[:-1])[0]
    return float(((mrec[i + 1] - mrec[i]) * mpre[i + 1]).sum())


@torch.no_grad()
def evaluate(model: nn.Module, data: ProxyData, batch: int = 16, score_thresh: float = 0.01) -> dict[str, float]:
    """Proxy metrics on the validation split: ``proxy_map50`` and ``proxy_abs_rel``."""
    model.eval()
    val = data.val
    n = val["images"].shape[0]
    per_class: dict[int, tuple[list[float], list[float]]] = {}
    n_gt: dict[int, int] = {}
    abs_rel_sum, abs_rel_n = 0.0, 0
    for s in range(0, n, batch):
        images, K = val["images"][s:s + batch], val["K"][s:s + batch]
        dets = model.predict(images, K, score_thresh=score_thresh)
        depth = model(images, K)["depth"]
        if "depth" in val:
            gt = val["depth"][s:s + batch]
            ok = (gt > 1e-3) & (gt < 80)
            abs_rel_sum += float(((depth - gt).abs() / gt.clamp(min=1e-3))[ok].sum())
            abs_rel_n += int(ok.sum())
        for i, d in enumerate(dets):
            j = s + i
            mask = val["gt_mask"][j]
            gboxes, glabels = val["gt_boxes"][j][mask], val["gt_labels"][j][mask]
            for c in glabels.unique().tolist() + d.labels.unique().tolist():
                per_class.setdefault(int(c), ([], []))
            for c in glabels.tolist():
                n_gt[c] = n_gt.get(c, 0) + 1
            for c in set(d.labels.tolist()):
                sel = d.labels == c
                boxes, scores = d.boxes[sel], d.scores[sel]
                g = gboxes[glabels == c]
                matched = torch.zeros(len(g), dtype=torch.bool)
                ious = _iou(boxes, g) if len(g) else torch.zeros(len(boxes), 0)
                for k in torch.argsort(scores, descending=True).tolist():
                    hit = 0.0
                    if ious.shape[1]:
                        cand = ious[k].clone()
                        cand[matched] = -1
                        m = int(cand.argmax())
                        if cand[m] >= 0.5:
                            matched[m] = True
                            hit = 1.0
                    per_class[c][0].append(hit)
                    per_class[c][1].append(float(scores[k]))
    aps = [average_precision(np.array(per_class.get(c, ([], []))[0]), np.array(per_class.get(c, ([], []))[1]), n)
           for c, n in n_gt.items()]
    return {"proxy_map50": float(np.mean(aps)) if aps else 0.0,
            "proxy_abs_rel": abs_rel_sum / max(1, abs_rel_n)}


# ---------------------------------------------------------------------------------------- measurement
def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_nonzero(model: nn.Module) -> int:
    return sum(int((p != 0).sum()) for p in model.parameters())


def model_flops(model: nn.Module, size: tuple[int, int]) -> int:
    """FLOPs of one forward pass on one image of ``size`` (a multiply-add counts 2)."""
    model.eval()
    x = torch.rand(1, 3, *size)
    with torch.no_grad():
        return count_flops(lambda: model(x))


def cpu_latency_ms(model: nn.Module, size: tuple[int, int], iters: int | None = None, warmup: int = 2
                   ) -> dict[str, float]:
    """Median/p90 CPU latency of one forward on one image (model only, warm-up excluded)."""
    iters = iters or LATENCY_ITERS
    warmup = min(warmup, iters)
    model.eval()
    x = torch.rand(1, 3, *size)
    with torch.inference_mode():
        for _ in range(warmup):
            model(x)
        return summarize(time_calls(lambda: model(x), torch.device("cpu"), iters))


def describe(model: nn.Module, size: tuple[int, int], latency: bool = True) -> dict[str, Any]:
    """Parameters, nonzeros, FLOPs and CPU latency of ``model`` (its deploy form when it has one)."""
    out: dict[str, Any] = {"params": count_params(model), "nonzero_params": count_nonzero(model),
                           "flops": model_flops(model, size)}
    if latency:
        out["cpu_latency_ms"] = cpu_latency_ms(model, size)["median_ms"]
    return out


def fused(model: nn.Module) -> nn.Module:
    from perception.nn.reparam import reparameterize_model

    return reparameterize_model(model)


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return copy.deepcopy({k: v.detach().clone() for k, v in model.state_dict().items()})


def write_report(out: Path, method: str, report: dict[str, Any]) -> Path:
    """``out/report.json`` with the method's figures plus the machine they were measured on."""
    out.mkdir(parents=True, exist_ok=True)
    report = {"method": method, "environment": environment(torch.device("cpu")), "load_avg": os.getloadavg(),
              **report}
    path = out / "report.json"
    path.write_text(json.dumps(report, indent=2, default=_jsonable))
    return path


def _jsonable(o: Any) -> Any:
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, tuple):
        return list(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
