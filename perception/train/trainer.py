"""The training loop (nanoGPT-style: a readable loop over a few named steps, no framework).

Trains the multi-branch (train) form with AdamW, warm-up + cosine learning rate, EMA weights,
gradient clipping and mixed precision (bf16 on CPU and GPU, fp16 on GPU), saves a resumable
checkpoint every few minutes (atomic), and writes both forms at the end. Runs under
``torchrun`` with DistributedDataParallel (gloo on CPU, NCCL on GPU).

With ``video:`` data specs each step also draws ``selfsup_batch`` frame triplets and adds the
self-supervised depth loss (:mod:`perception.train.selfsup`); the pose network it needs is
trained alongside, kept in ``last.ckpt`` and left out of the shipped model files.
"""

from __future__ import annotations

import copy
import csv
import json
import logging
import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.distributed as dist

from perception.data.sample_folder import SampleFolder
from perception.nn import ModelLoadError, create_model, load_checkpoint, reparameterize_model, resolve_model, \
    save_checkpoint
from perception.nn.model import PerceptionNet
from perception.train.config import DistillSettings, TrainConfig
from perception.train.consistency import blur_consistency_loss, gaussian_blur
from perception.train.data import CameraDataset, VideoTripletDataset, collate, collate_triplets, selfsup_batches
from perception.train.distill import DistillConfig, distill_wrapper
from perception.train.losses import SELFSUP_DEFAULT, PerceptionLoss
from perception.train.selfsup import PoseNet, triplet_loss
from perception.train.sources import resolve_data, resolve_video
from perception.utils.safe_load import load_state

log = logging.getLogger(__name__)

# log.csv columns of the self-supervised depth loss (only written when the config has video data)
SELFSUP_COLUMNS = ("selfsup", "ss_photo", "ss_smooth", "ss_height", "ss_automask", "ss_est_height")
# ... and of the distillation terms (only with a distill: teacher)
DISTILL_COLUMNS = ("kd_cls", "kd_feat", "kd_depth")


class ConcatSource:
    """Several sample folders as one camera source (they may have different camera counts).

    Each root is a path or a ``(path, frame_limit, repeat)`` triple from
    :func:`perception.train.sources.resolve_data`."""

    def __init__(self, roots: list[str | tuple[str, int | None, int]]):
        specs = [(r, None, 1) if isinstance(r, str) else r for r in roots]
        self.parts = [SampleFolder(path, max_frames=limit) for path, limit, _ in specs]
        self.repeats = [max(1, int(rep)) for _, _, rep in specs]
        self.offsets = np.cumsum([0] + [len(p) for p in self.parts])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def camera_items(self) -> list[tuple[int, int]]:
        """(frame, camera) pairs over all folders, each folder listed ``repeat`` times."""
        return [(int(off) + f, c) for p, off, rep in zip(self.parts, self.offsets, self.repeats)
                for _ in range(rep) for f in range(len(p)) for c in range(p.num_cameras(0))]

    def camera_sample(self, index: int, camera: int):
        part = int(np.searchsorted(self.offsets, index, side="right") - 1)
        return self.parts[part].camera_sample(index - int(self.offsets[part]), camera)


class ModelEMA:
    """Exponential moving average of weights and buffers, with the usual warm-up of the decay."""

    def __init__(self, model: torch.nn.Module, decay: float, updates: int = 0):
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay, self.updates = decay, updates

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.updates += 1
        d = self.decay * (1 - math.exp(-self.updates / 2000))
        msd = model.state_dict()
        for k, v in self.module.state_dict().items():
            if v.dtype.is_floating_point:
                v.mul_(d).add_(msd[k].detach(), alpha=1 - d)
            else:
                v.copy_(msd[k])


def lr_factor(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    t = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


def epoch_batches(n: int, batch: int, seed: int, epoch: int, rank: int, world: int) -> list[list[int]]:
    """This process's batches of one epoch: a seeded permutation, sharded by rank, tail dropped."""
    g = torch.Generator().manual_seed(seed * 100003 + epoch)
    perm = torch.randperm(n, generator=g).tolist()
    per_step = batch * world
    steps = n // per_step
    return [perm[s * per_step + rank * batch: s * per_step + (rank + 1) * batch] for s in range(steps)]


def _load_init(model: PerceptionNet, init: PerceptionNet, path: str) -> None:
    """Initialise ``model`` from ``init``: every weight must match, except that detection levels
    ``model`` has beyond ``init``'s (``det_strides`` that extend the init's, e.g. rep-s ->
    rep-s-p2) keep their fresh initialisation."""
    ours, theirs = tuple(model.cfg.det_strides), tuple(init.cfg.det_strides)
    if ours[:len(theirs)] != theirs:
        raise ValueError(f"{path}: its detection levels {theirs} are not the first of this model's {ours}")
    new_levels = tuple(f"det_head.levels.{i}." for i in range(len(theirs), len(ours)))
    try:
        missing, unexpected = model.load_state_dict(init.state_dict(), strict=False)
    except RuntimeError as exc:     # shape mismatches: another architecture
        raise ValueError(f"{path}: does not fit {model.cfg.name or 'the model'} "
                         f"({str(exc).splitlines()[1].strip()})") from None
    bad = [k for k in missing if not k.startswith(new_levels)]
    if bad or unexpected:
        raise ValueError(f"{path}: does not fit {model.cfg.name or 'the model'} "
                         f"(missing {bad[:3]}, unexpected {unexpected[:3]})")
    if new_levels:
        log.info("init %s: detection levels at strides %s start from scratch", path, ours[len(theirs):])


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _atomic_torch_save(obj: Any, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _rng_state() -> dict[str, Any]:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def _set_rng_state(s: dict[str, Any]) -> None:
    torch.set_rng_state(s["torch"])
    np.random.set_state(s["numpy"])
    random.setstate(s["python"])


def _distributed() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
    return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)


def _trim_log(path: Path, last_step: int) -> None:
    """Keep only the log rows up to ``last_step`` (the checkpoint being resumed; 0 = a fresh start).

    A run killed between two checkpoints has logged steps that the resumed run trains and logs
    again; without this they would appear twice in ``log.csv``.
    """
    if not path.is_file():
        return
    if last_step == 0:
        path.unlink()
        return
    lines = path.read_text().splitlines(keepends=True)
    steps = [line.split(",", 1)[0] for line in lines[1:]]
    kept = lines[:1] + [line for line, s in zip(lines[1:], steps) if s.isdigit() and int(s) <= last_step]
    if len(kept) < len(lines):
        tmp = path.with_suffix(".tmp")
        tmp.write_text("".join(kept))
        tmp.replace(path)
        log.info("%s: dropped %d rows logged after step %d (the checkpoint)", path, len(lines) - len(kept), last_step)


def _frozen_model(spec: str, what: str, device: torch.device) -> PerceptionNet:
    """A registered model or model file, fused (same outputs, faster), in eval mode, on ``device``."""
    try:
        model = resolve_model(spec)  # a registered name (shipped weights) or a model file
    except ModelLoadError as exc:
        raise ValueError(f"{what} {exc}") from None
    model = reparameterize_model(model.float()).to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def _distill_wrapper(settings: DistillSettings, device: torch.device
                     ) -> Callable[[PerceptionLoss, PerceptionNet], Any]:
    """The config's ``distill:`` teacher, fused (same outputs, faster) and frozen, as a loss wrapper."""
    teacher = _frozen_model(settings.teacher, "distill.teacher", device)
    log.info("distilling from %s (temperature %g)", settings.teacher, settings.temperature)
    return distill_wrapper(teacher, DistillConfig(temperature=settings.temperature, w_cls=settings.w_cls,
                                                  w_feat=settings.w_feat, w_depth=settings.w_depth))


@dataclass
class _Run:
    """One training run: what the steps share, and the state a checkpoint saves (the weights, the
    EMA, the optimizer, the optional pose network and the position ``step`` / ``epoch`` / ``pos``,
    the batch within the epoch)."""

    cfg: TrainConfig
    out: Path
    device: torch.device
    rank: int
    world: int
    model: PerceptionNet
    ema: ModelEMA
    opt: torch.optim.Optimizer
    criterion: Any
    use_video: bool = False
    ss_weight: float = 0.0
    pose_net: PoseNet | None = None
    blur_teacher: torch.nn.Module | None = None   # frozen target model of loss.blur_consistency
    step: int = 0
    epoch: int = 0
    pos: int = 0
    # set once the data is ready (:func:`_build_data`)
    ddp_model: torch.nn.Module | None = None
    ddp_pose: torch.nn.Module | None = None
    anchors: torch.Tensor | None = None
    strides: torch.Tensor | None = None
    amp_dtype: torch.dtype | None = None
    scaler: torch.amp.GradScaler | None = None
    ss_iter: Iterator[dict[str, torch.Tensor]] | None = None

    @property
    def ckpt_path(self) -> Path:
        return self.out / "last.ckpt"

    def save(self) -> None:
        """``last.ckpt`` (resumable) and the EMA model file; rank 0 only."""
        if self.rank != 0:
            return
        state = {"model": self.model.state_dict(), "ema": self.ema.module.state_dict(), "ema_updates": self.ema.updates,
                 "optimizer": self.opt.state_dict(), "step": self.step, "epoch": self.epoch, "pos": self.pos,
                 "rng": _rng_state(), "config": self.cfg.to_dict()}
        if self.pose_net is not None:  # training state only: the shipped files below hold the model alone
            state["pose_net"] = self.pose_net.state_dict()
        _atomic_torch_save(state, self.ckpt_path)
        # the train form only: the deploy form is derived from it on load (reparameterize_model)
        save_checkpoint(self.ema.module, self.out / f"{self.cfg.model}.safetensors", extra={"step": str(self.step)})
        log.info("checkpoint at step %d -> %s", self.step, self.out)


def _setup(cfg: TrainConfig) -> tuple[int, int, torch.device, Path]:
    """(rank, world size, device, output folder) of this process; seeds the global RNGs."""
    rank, world = _distributed()
    device = torch.device(cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    if cfg.amp == "fp16" and device.type != "cuda":
        raise ValueError("amp: fp16 needs a GPU; use bf16 on the CPU")
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    return rank, world, device, out


def _build_model(cfg: TrainConfig, rank: int, world: int, device: torch.device, out: Path,
                 criterion_wrapper: Callable[[PerceptionLoss, PerceptionNet], Any] | None) -> _Run:
    """The model (fresh or from ``cfg.init``), its EMA, the optimizer, the loss (wrapped for
    distillation) and, with ``video:`` data, the pose network. The order of the random draws
    is part of exact resume: do not reorder."""
    model: PerceptionNet = create_model(cfg.model)
    if cfg.init:
        init = load_checkpoint(cfg.init)
        if init.is_reparameterized:
            raise ValueError(f"{cfg.init}: init checkpoint is in fused form; training needs a train-form checkpoint")
        _load_init(model, init, cfg.init)
    model.to(device).train()
    ema = ModelEMA(model, cfg.ema_decay)
    opt = torch.optim.AdamW(_param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.999))
    criterion = PerceptionLoss(model.num_classes, model.cfg.f_ref, cfg.loss)
    if cfg.distill is not None:
        if criterion_wrapper is not None:
            raise ValueError("distill: in the config and a criterion_wrapper argument: use one of them")
        criterion_wrapper = _distill_wrapper(cfg.distill, device)
    if criterion_wrapper is not None:
        criterion = criterion_wrapper(criterion, model)
    use_video = any(spec.startswith("video:") for spec in cfg.data)
    ss_weight = (SELFSUP_DEFAULT if use_video else 0.0) if cfg.loss.selfsup is None else float(cfg.loss.selfsup)
    pose_net: PoseNet | None = None
    if use_video and ss_weight > 0:
        if criterion_wrapper is not None:
            raise ValueError("video: data specs cannot be combined with a criterion wrapper (e.g. distillation) yet: "
                             "the video frames share the model's forward pass")
        with torch.random.fork_rng(devices=[]):  # its init leaves the global RNG stream as without video
            torch.manual_seed(cfg.seed + 7919)
            pose_net = PoseNet().to(device).train()
        # same optimizer (and learning-rate schedule) as the model: two more parameter groups
        for group in _param_groups(pose_net, cfg.weight_decay):
            opt.add_param_group(group)
        log.info("self-supervised depth on video: weight %g, %d triplets per step", ss_weight, cfg.selfsup_batch)
    elif use_video:
        log.warning("loss.selfsup is 0: the video: data specs are not used")
    blur_teacher = None
    if cfg.blur_teacher is not None:
        blur_teacher = _frozen_model(cfg.blur_teacher, "blur_teacher", device)
        log.info("blur consistency (weight %g) towards %s", cfg.loss.blur_consistency, cfg.blur_teacher)
    return _Run(cfg, out, device, rank, world, model, ema, opt, criterion, use_video=use_video, ss_weight=ss_weight,
                pose_net=pose_net, blur_teacher=blur_teacher)


def _resume(run: _Run) -> None:
    """Load ``last.ckpt`` into the run: weights, EMA, optimizer, position in the data and RNGs."""
    ckpt_path, cfg = run.ckpt_path, run.cfg
    if not ckpt_path.is_file():
        log.warning("--resume given but %s does not exist: starting from scratch", ckpt_path)
        return
    state = load_state(ckpt_path, map_location=run.device)  # tensors and plain data only: never runs code
    if state["config"]["model"] != cfg.model:
        raise ValueError(f"{ckpt_path}: checkpoint is for {state['config']['model']}, config says {cfg.model}")
    run.model.load_state_dict(state["model"])
    if run.pose_net is not None:
        if "pose_net" not in state:
            raise ValueError(f"{ckpt_path}: checkpoint was trained without video data; cannot resume with video:")
        run.pose_net.load_state_dict(state["pose_net"])
    run.ema.module.load_state_dict(state["ema"])
    run.ema.updates = state["ema_updates"]
    run.opt.load_state_dict(state["optimizer"])
    run.step, run.epoch, run.pos = state["step"], state["epoch"], state["pos"]
    _set_rng_state(state["rng"])
    log.info("resumed from %s at step %d (epoch %d, batch %d)", ckpt_path, run.step, run.epoch, run.pos)


def _build_data(run: _Run, data_progress: Callable[[int, int], None] | None) -> CameraDataset:
    """Wrap the models for DDP, resolve the data specs, and set the run's anchors, mixed precision
    and video-triplet iterator; returns the labelled camera dataset."""
    cfg, rank, world, device, pose_net = run.cfg, run.rank, run.world, run.device, run.pose_net
    run.ddp_model, run.ddp_pose = run.model, pose_net
    if world > 1:
        run.ddp_model = torch.nn.parallel.DistributedDataParallel(
            run.model, device_ids=[device.index] if device.type == "cuda" else None)
        if pose_net is not None:
            run.ddp_pose = torch.nn.parallel.DistributedDataParallel(
                pose_net, device_ids=[device.index] if device.type == "cuda" else None)

    # synthetic specs are rendered into a cache by rank 0 first; the other ranks wait
    data = resolve_data(cfg.data, cfg.size, render=rank == 0, progress=data_progress)
    videos = resolve_video(cfg.data, cfg.size, progress=data_progress) if pose_net is not None and rank == 0 else []
    if world > 1:
        dist.barrier()
        if pose_net is not None and rank != 0:
            videos = resolve_video(cfg.data, cfg.size, render=False)
    if run.use_video and not data:
        raise ValueError(f"{cfg.data}: video: specs only add a self-supervised loss; give labelled data "
                         "(a sample folder, synth: or teacher: spec) as well")
    dataset = CameraDataset(ConcatSource(data), cfg.size, cfg.augment, cfg.seed)
    if len(dataset) < cfg.batch * world:
        raise ValueError(f"{cfg.data}: {len(dataset)} camera images, fewer than one batch of {cfg.batch * world}")
    run.anchors, run.strides = run.model.anchors(*cfg.size, device)
    run.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.amp)
    run.scaler = torch.amp.GradScaler("cuda", enabled=cfg.amp == "fp16")
    if pose_net is not None:
        video_set = VideoTripletDataset(videos, cfg.size, cfg.augment, cfg.seed)
        n_triplets = len(video_set)
        selfsup_batches(n_triplets, cfg.selfsup_batch, cfg.seed, 0, rank, world)  # clear error if too few
        ss_sampler = (selfsup_batches(n_triplets, cfg.selfsup_batch, cfg.seed, s, rank, world)
                      for s in range(run.step, cfg.steps))
        # its own generator: creating this loader must not draw from the global RNG
        run.ss_iter = iter(torch.utils.data.DataLoader(video_set, batch_sampler=ss_sampler,
                                                       collate_fn=collate_triplets, num_workers=cfg.workers,
                                                       generator=torch.Generator()))
    return dataset


def _train_step(run: _Run, batch: dict[str, torch.Tensor]) -> tuple[float, torch.Tensor, dict[str, Any]]:
    """One optimizer step on ``batch`` (plus a video-triplet batch with self-supervision):
    (learning rate, loss, loss parts). Advances ``step`` and ``pos`` and the EMA."""
    cfg, device, model, pose_net, opt, scaler = run.cfg, run.device, run.model, run.pose_net, run.opt, run.scaler
    batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
    lr = cfg.lr * lr_factor(run.step, cfg)
    for g in opt.param_groups:
        g["lr"] = lr
    ss = None
    if run.ss_iter is not None:
        ss = {k: v.to(device, non_blocking=True) for k, v in next(run.ss_iter).items()}
        target, n = ss["frames_aug"][:, 1], batch["images"].shape[0]
    amp_dtype = run.amp_dtype
    with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
        if ss is None:
            outputs = run.ddp_model(batch["images"], batch["K"])
        else:
            # one forward for labelled images and video targets: BatchNorm sees both
            # domains in one batch, and DDP gets the single forward it expects
            both = run.ddp_model(torch.cat([batch["images"], target]), torch.cat([batch["K"], ss["K"]]))
            outputs = {"depth": both["depth"][:n], "det": both["det"][:n]}
            poses = run.ddp_pose(torch.cat([target, target]),
                                 torch.cat([ss["frames_aug"][:, 0], ss["frames_aug"][:, 2]]))
    loss, parts = run.criterion(outputs, run.anchors, run.strides, batch)
    if cfg.loss.blur_consistency > 0:
        bc = _blur_consistency(run, batch, outputs["depth"])
        loss = loss + cfg.loss.blur_consistency * bc
        parts["blur_cons"] = float(bc.detach())
    if ss is not None:
        # tie-breaking noise from a generator seeded by the step: exact on resume
        gen = torch.Generator(device=device).manual_seed(cfg.seed * 1000003 + run.step)
        ss_loss, ss_parts = triplet_loss(ss, both["depth"][n:], poses, gen)
        loss = loss + run.ss_weight * ss_loss
        parts.update(ss_parts)
    if not torch.isfinite(loss):
        raise FloatingPointError(f"loss is {loss.item()} at step {run.step}: {parts}")
    opt.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.unscale_(opt)
    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    if pose_net is not None:
        torch.nn.utils.clip_grad_norm_(pose_net.parameters(), cfg.grad_clip)
    scaler.step(opt)
    scaler.update()
    run.ema.update(model)
    run.step, run.pos = run.step + 1, run.pos + 1
    return lr, loss, parts


def _blur_consistency(run: _Run, batch: dict[str, torch.Tensor], depth: torch.Tensor) -> torch.Tensor:
    """The blur-consistency loss (train/consistency.py) over the batch's images without dense
    depth labels; the target is the depth of the blurred image by ``cfg.blur_teacher`` (frozen),
    or else by the EMA model."""
    B = batch["images"].shape[0]
    dense = batch.get("depth_dense")
    real = ~dense if dense is not None else torch.ones(B, dtype=torch.bool, device=depth.device)
    if not bool(real.any()):
        return depth.sum() * 0.0
    amp_dtype = run.amp_dtype
    with torch.no_grad(), torch.autocast(run.device.type, enabled=False):
        blurred = gaussian_blur(batch["images"][real].float())     # the model checks for fp32 input
    with torch.no_grad(), torch.autocast(run.device.type, dtype=amp_dtype or torch.float32,
                                         enabled=amp_dtype is not None):
        teacher = run.blur_teacher if run.blur_teacher is not None else run.ema.module
        target = teacher(blurred, batch["K"][real])["depth"]
    return blur_consistency_loss(depth[real], target, max_depth=run.cfg.loss.blur_consistency_max_depth,
                                 affine=run.cfg.loss.blur_consistency_affine)


class _TrainLog:
    """``log.csv``, TensorBoard and the ``progress`` callback (rank 0), every ``cfg.log_every`` steps."""

    def __init__(self, run: _Run, resume: bool, progress: Callable[[dict[str, Any]], None] | None) -> None:
        cfg, out, rank, step = run.cfg, run.out, run.rank, run.step
        self.rank, self.world, self.progress = rank, run.world, progress
        csv_path = out / "log.csv"
        if rank == 0:
            _trim_log(csv_path, step)
        self.csv_file = open(csv_path, "a", newline="") if rank == 0 else None
        self.writer: csv.writer | None = csv.writer(self.csv_file) if self.csv_file else None
        self.columns = ["step", "epoch", "lr", "loss", "cls", "box", "l1", "depth_obj", "size", "angle", "offset",
                        "depth", "depth_grad"] + (list(SELFSUP_COLUMNS) if run.pose_net is not None else []) + \
            (list(DISTILL_COLUMNS) if cfg.distill is not None else []) + \
            (["blur_cons"] if cfg.loss.blur_consistency > 0 else []) + ["img_per_s"]
        if self.writer and csv_path.stat().st_size == 0:
            self.writer.writerow(self.columns + ["time"])
        self.tb = _tensorboard(out, purge_step=step + 1 if resume else None) if rank == 0 else None
        if rank == 0:
            (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
        self.t_log, self.n_img = time.monotonic(), 0

    def after_step(self, run: _Run, images: int, lr: float, loss: torch.Tensor, parts: dict[str, Any]) -> None:
        """Count the step's ``images`` (this process's batch) and log a row when it is due."""
        step = run.step
        self.n_img += images * self.world
        if not (step % run.cfg.log_every == 0 or step == run.cfg.steps):
            return
        dt = time.monotonic() - self.t_log
        row = {"step": step, "epoch": run.epoch, "lr": lr, "loss": float(loss.detach()), **parts,
               "img_per_s": self.n_img / max(dt, 1e-9)}
        self.t_log, self.n_img = time.monotonic(), 0
        if self.writer:
            self.writer.writerow([row.get(k, "") for k in self.columns] + [time.time()])
            self.csv_file.flush()
        if self.tb:
            for k, v in row.items():
                self.tb.add_scalar(f"train/{k}", v, step)
        if self.progress and self.rank == 0:
            self.progress(row)

    def close(self) -> None:
        if self.csv_file:
            self.csv_file.close()
        if self.tb:
            self.tb.close()


def train(cfg: TrainConfig, resume: bool = False, progress: Callable[[dict[str, Any]], None] | None = None,
          stop_after: int | None = None, data_progress: Callable[[int, int], None] | None = None,
          criterion_wrapper: Callable[[PerceptionLoss, PerceptionNet], Any] | None = None) -> Path:
    """Run (or resume) a training run; returns the output folder.

    ``stop_after`` ends the run after that many steps of *this call* (with a checkpoint), which
    is how tests check that a resumed run equals an uninterrupted one. ``criterion_wrapper``
    (optional) wraps the loss, e.g. with a distillation teacher
    (:func:`perception.train.distill.distill_wrapper`); same call signature as the loss.
    """
    rank, world, device, out = _setup(cfg)
    run = _build_model(cfg, rank, world, device, out, criterion_wrapper)
    if resume:
        _resume(run)
    dataset = _build_data(run, data_progress)
    train_log = _TrainLog(run, resume, progress)

    last_ckpt = time.monotonic()
    steps_this_call = 0
    try:
        while run.step < cfg.steps:
            dataset.set_epoch(run.epoch)
            batches = epoch_batches(len(dataset), cfg.batch, cfg.seed, run.epoch, rank, world)
            loader = torch.utils.data.DataLoader(dataset, batch_sampler=batches[run.pos:], collate_fn=collate,
                                                 num_workers=cfg.workers, persistent_workers=False)
            for batch in loader:
                lr, loss, parts = _train_step(run, batch)
                steps_this_call += 1
                train_log.after_step(run, batch["images"].shape[0], lr, loss, parts)
                if time.monotonic() - last_ckpt > cfg.ckpt_minutes * 60:
                    run.save()
                    last_ckpt = time.monotonic()
                if run.step >= cfg.steps or (stop_after is not None and steps_this_call >= stop_after):
                    break
            else:
                run.epoch, run.pos = run.epoch + 1, 0
                continue
            if run.step < cfg.steps and run.pos >= len(batches):
                run.epoch, run.pos = run.epoch + 1, 0
            break
    finally:
        train_log.close()
    run.save()
    if world > 1:
        dist.barrier()
    return out


def _tensorboard(out: Path, purge_step: int | None = None):  # noqa: ANN202
    """TensorBoard writer in ``out/tb``. On resume, ``purge_step`` makes TensorBoard drop the
    events a killed run logged after its checkpoint (as :func:`_trim_log` does for the CSV)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except Exception:  # noqa: BLE001 - tensorboard is optional
        log.info("tensorboard not installed: logging to CSV only (pip install 'perception[tensorboard]')")
        return None
    return SummaryWriter(str(out / "tb"), purge_step=purge_step)
