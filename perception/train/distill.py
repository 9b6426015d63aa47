"""Knowledge distillation from a larger teacher (e.g. rep-s to rep-n): the loss the trainer adds.

:class:`DistillationLoss` wraps the task criterion (:class:`PerceptionLoss`, same call
signature) and adds, with the teacher frozen in eval mode on the same batch:

* **soft class targets** with temperature ``T``: the class scores are independent sigmoids
  (varifocal training), so the soft target of each class logit is ``sigmoid(z_t / T)`` and
  the loss is ``T^2 * BCE(z_s / T, sigmoid(z_t / T))`` averaged over anchors and classes
  (Hinton et al. 2015, in its binary form);
* **feature distillation** by attention transfer (Zagoruyko & Komodakis 2017) on the four
  neck outputs: ``|| a_s - a_t ||_2`` with ``a = normalise(mean_c f^2)`` flattened; it needs
  no adapter, so teacher and student widths may differ;
* **depth distillation**: L1 between student and teacher log depth on every pixel (dense
  pseudo-ground truth where the real depth is sparse or missing).

Use with the main trainer: ``distill:`` in the training config, or
``train(cfg, criterion_wrapper=distill_wrapper(teacher))``. The compression comparison
(:mod:`perception.compress.distill`) uses the same loss on its proxy task.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from perception.nn.heads import det_layout
from perception.nn.model import PerceptionNet
from perception.train.losses import Criterion


@dataclass
class DistillConfig:
    temperature: float = 2.0
    w_cls: float = 1.0
    w_feat: float = 50.0
    w_depth: float = 0.5


def attention_map(f: torch.Tensor) -> torch.Tensor:
    a = f.float().pow(2).mean(1).flatten(1)
    return F.normalize(a, dim=1)


class _NeckTap:
    """Forward hook keeping the last neck outputs of a model."""

    def __init__(self, model: PerceptionNet):
        self.feats: list[torch.Tensor] = []
        self.handle = model.neck.register_forward_hook(self._hook)

    def _hook(self, module: nn.Module, inputs: Any, output: Any) -> None:
        d2, pyramid = output
        self.feats = [d2, *pyramid]


class DistillationLoss:
    """``criterion`` + soft-target, attention-transfer and depth distillation terms."""

    def __init__(self, criterion: Criterion, teacher: PerceptionNet, student: PerceptionNet,
                 cfg: DistillConfig | None = None):
        self.criterion, self.teacher, self.cfg = criterion, teacher.eval(), cfg or DistillConfig()
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        if teacher.num_classes != student.num_classes:
            raise ValueError("teacher and student must predict the same classes")
        self.cls = det_layout(student.num_classes)["cls"]
        self.t_tap, self.s_tap = _NeckTap(teacher), _NeckTap(student)

    def __call__(self, outputs: dict[str, torch.Tensor], anchors: torch.Tensor, strides: torch.Tensor,
                 batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        loss, parts = self.criterion(outputs, anchors, strides, batch)
        student_feats = self.s_tap.feats
        with torch.no_grad():
            t_out = self.teacher(batch["images"], batch["K"])
        c, T = self.cfg, self.cfg.temperature
        zs, zt = outputs["det"][..., self.cls].float(), t_out["det"][..., self.cls].float()
        kd = F.binary_cross_entropy_with_logits(zs / T, torch.sigmoid(zt / T)) * T * T
        feat = sum((attention_map(s) - attention_map(t)).norm(dim=1).mean()
                   for s, t in zip(student_feats, self.t_tap.feats))
        depth = (outputs["depth"].float().clamp(min=1e-3).log() - t_out["depth"].float().clamp(min=1e-3).log()
                 ).abs().mean()
        total = loss + c.w_cls * kd + c.w_feat * feat + c.w_depth * depth
        parts.update(kd_cls=float(kd.detach()), kd_feat=float(feat.detach()), kd_depth=float(depth.detach()))
        return total, parts


def distill_wrapper(teacher: PerceptionNet, cfg: DistillConfig | None = None
                    ) -> Callable[[Criterion, PerceptionNet], DistillationLoss]:
    """``(criterion, student) -> DistillationLoss`` for the trainer's ``criterion_wrapper``."""
    return lambda criterion, student: DistillationLoss(criterion, teacher, student, cfg)
