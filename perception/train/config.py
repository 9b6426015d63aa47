"""Training configuration: one YAML file -> :class:`TrainConfig` (unknown keys are errors)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from perception.train.data import AugmentConfig
from perception.train.losses import LossWeights
from perception.utils.yaml_io import load_yaml


@dataclass
class DistillSettings:
    """Knowledge distillation from a larger teacher (:mod:`perception.train.distill`)."""

    teacher: str  # a registered name (its shipped weights) or a checkpoint path
    temperature: float = 2.0  # soft class targets: T^2 * BCE(z_s / T, sigmoid(z_t / T))
    w_cls: float = 1.0
    w_feat: float = 50.0  # attention transfer on the neck outputs
    w_depth: float = 0.5  # L1 on log depth against the teacher


def _is_number(x: Any) -> bool:
    """A finite int or float from the config (YAML ``true`` is a bool, not a number)."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


@dataclass
class TrainConfig:
    model: str = "rep-n"
    out: str = "runs/train/rep-n"
    data: list[str] = field(default_factory=lambda: ["runs/data/synth-train"])  # sample folders
    size: tuple[int, int] = (256, 448)  # network input H, W
    batch: int = 16  # per process
    steps: int = 20000
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_steps: int = 300
    min_lr_ratio: float = 0.05
    ema_decay: float = 0.9995
    amp: str = "bf16"  # bf16 (CPU/GPU), fp16 (GPU), none
    grad_clip: float = 10.0
    seed: int = 0
    workers: int = 1
    ckpt_minutes: float = 5.0
    log_every: int = 10
    device: str = "auto"
    init: str | None = None  # checkpoint to start from (weights only)
    selfsup_batch: int = 2  # video triplets per step and process (only with video: data specs)
    loss: LossWeights = field(default_factory=LossWeights)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    distill: DistillSettings | None = None  # e.g. {teacher: rep-s, temperature: 2.0}
    # a frozen model (registered name or file) whose depth of the blurred real frames is the
    # target of loss.blur_consistency; None = the EMA of the model being trained
    blur_teacher: str | None = None

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "config") -> "TrainConfig":
        d = dict(d or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"{where}: unknown keys {sorted(unknown)}; known: {sorted(known)}")
        for key, sub in (("loss", LossWeights), ("augment", AugmentConfig), ("distill", DistillSettings)):
            if key in d and not (key == "distill" and d[key] is None):
                if not isinstance(d[key] or {}, dict):
                    raise ValueError(f"{where}: '{key}' must be a mapping, got {d[key]!r}")
                sub_known = {f.name for f in dataclasses.fields(sub)}
                bad = set(d[key] or {}) - sub_known
                if bad:
                    raise ValueError(f"{where}: unknown keys {sorted(bad)} in '{key}'; known: {sorted(sub_known)}")
                if key == "distill" and "teacher" not in (d[key] or {}):
                    raise ValueError(f"{where}: 'distill' needs a teacher (a registered model name or a checkpoint)")
                d[key] = sub(**{k: tuple(v) if isinstance(v, list) else v for k, v in (d[key] or {}).items()})
        if "size" in d:
            d["size"] = tuple(d["size"])
        if isinstance(d.get("data"), str):
            d["data"] = [d["data"]]
        for key in ("out", "init"):   # "~/..." means the home folder, as on the command line
            if isinstance(d.get(key), str):
                d[key] = str(Path(d[key]).expanduser())
        cfg = cls(**d)
        bc = cfg.loss.blur_consistency
        if not (_is_number(bc) and bc >= 0):
            raise ValueError(f"{where}: loss.blur_consistency must be a weight >= 0, got {bc!r}")
        if not isinstance(cfg.loss.blur_consistency_affine, bool):
            raise ValueError(f"{where}: loss.blur_consistency_affine must be true or false, "
                             f"got {cfg.loss.blur_consistency_affine!r}")
        md = cfg.loss.blur_consistency_max_depth
        if not (_is_number(md) and md > 0):
            raise ValueError(f"{where}: loss.blur_consistency_max_depth must be a depth in metres > 0, got {md!r}")
        if cfg.blur_teacher is not None and not bc > 0:
            raise ValueError(f"{where}: blur_teacher is set but loss.blur_consistency is 0, so it would not be used")
        if cfg.amp not in ("bf16", "fp16", "none"):
            raise ValueError(f"{where}: amp must be bf16, fp16 or none, got {cfg.amp!r}")
        return cfg

    @classmethod
    def load(cls, path: str | Path) -> "TrainConfig":
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"{path}: config file not found")
        data = load_yaml(path)  # YAMLInputError (a ValueError) naming the file and line
        return cls.from_dict(data, str(path))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
