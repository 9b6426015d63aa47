"""Training losses: varifocal classification, GIoU + L1 boxes, 3D attributes, dense depth.

* Varifocal loss (VarifocalNet, Zhang et al. 2021): BCE against IoU-aware soft targets,
  negatives down-weighted by ``alpha * p^gamma``.
* Boxes: GIoU + L1 on (l, t, r, b) distances in stride units, weighted by target quality.
* 3D: L1 on the log canonical depth (``log(z * f_ref / fx)``, so the loss does not depend on
  the camera), log size, (sin, cos) of the observation angle and the projected-centre offset.
* Depth: scale-invariant log loss (Eigen et al. 2014, lambda < 1 keeps it metric) on dense
  or sparse ground truth, plus multi-scale gradient matching (MiDaS) on dense maps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F

from perception.nn.heads import det_layout
from perception.train.assigner import TaskAlignedAssigner
from perception.train.boxes import aligned_giou


@dataclass
class LossWeights:
    cls: float = 1.0
    box: float = 2.5
    l1: float = 0.5
    depth_obj: float = 1.0
    size: float = 0.5
    angle: float = 0.5
    offset: float = 0.5
    depth: float = 1.0
    depth_grad: float = 0.5
    # self-supervised depth on ``video:`` data (photo + smooth + height terms, see train/selfsup.py);
    # None = 0.1 when the config has video specs, else off. See SELFSUP_DEFAULT for why 0.1.
    selfsup: float | None = None
    # depth of the images without dense depth labels (real frames) pulled towards the EMA model's
    # depth of the same image blurred by 1 px (train/consistency.py); 0 = off
    blur_consistency: float = 0.0
    blur_consistency_affine: bool = False   # also take out the spread of log depth (see consistency.py)
    blur_consistency_max_depth: float = 80.0   # metres: only pixels whose target is nearer are pulled


# Why 0.1: the photometric term (SSIM/L1 mix on [0, 1] images) is of order 0.05-0.15 and its
# gradient is noisy on the two triplets a step sees, while the supervised depth terms are
# 0.4-0.9 (SILog in the rep-s log) and the detection terms several times that. At 0.1 the video
# adapts the depth head to real images without outweighing the metric synthetic ground truth,
# whose scale the camera-height term alone pins down only loosely (a median over a road patch).
SELFSUP_DEFAULT = 0.1


def varifocal_loss(logits: torch.Tensor, targets: torch.Tensor, alpha: float = 0.75, gamma: float = 2.0
                   ) -> torch.Tensor:
    """Element-wise varifocal loss (sum it yourself)."""
    p = logits.sigmoid().detach()
    weight = alpha * p.pow(gamma) * (targets <= 0) + targets
    return F.binary_cross_entropy_with_logits(logits, targets, reduction="none") * weight


def _ltrb(anchors: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    return torch.cat([anchors - boxes[..., :2], boxes[..., 2:] - anchors], -1)


class DetectionLoss:
    """Assigns targets with :class:`TaskAlignedAssigner` and computes the detection losses."""

    def __init__(self, num_classes: int, f_ref: float, weights: LossWeights | None = None,
                 assigner: TaskAlignedAssigner | None = None):
        self.nc, self.f_ref = num_classes, f_ref
        self.w = weights or LossWeights()
        self.assigner = assigner or TaskAlignedAssigner()
        self.lay = det_layout(num_classes)

    def __call__(self, det: torch.Tensor, anchors: torch.Tensor, strides: torch.Tensor,
                 batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        det = det.float()
        lay = self.lay
        logits = det[..., lay["cls"]]
        s = strides[None, :, None]
        ltrb = F.softplus(det[..., lay["ltrb"]]) * s
        pred_boxes = torch.cat([anchors[None] - ltrb[..., :2], anchors[None] + ltrb[..., 2:]], -1)
        a = self.assigner(logits.sigmoid().detach(), pred_boxes.detach(), anchors, batch["gt_labels"],
                          batch["gt_boxes"], batch["gt_mask"], batch.get("ignore_boxes"))
        ts_sum = a.target_scores.sum().clamp(min=1.0)
        cls_el = varifocal_loss(logits, a.target_scores)
        cls_el = cls_el * (~a.ignore_mask)[..., None]
        losses = {"cls": cls_el.sum() / ts_sum}
        zero = det.sum() * 0.0
        fg = a.fg_mask
        if not bool(fg.any()):
            losses.update(box=zero, l1=zero, depth_obj=zero, size=zero, angle=zero, offset=zero)
            return losses
        weight = a.target_scores.sum(-1)[fg]  # quality of each positive
        giou = aligned_giou(pred_boxes[fg], a.target_boxes[fg])
        losses["box"] = ((1.0 - giou) * weight).sum() / ts_sum
        st = strides[None].expand_as(fg)[fg][:, None]
        anc = anchors[None].expand(fg.shape[0], -1, -1)[fg]
        tgt_ltrb = _ltrb(anc, a.target_boxes[fg]).clamp(min=0) / st
        losses["l1"] = (F.l1_loss(ltrb[fg] / st, tgt_ltrb, reduction="none").mean(-1) * weight).sum() / ts_sum

        # 3D attributes of the matched GT (only GTs that have them, e.g. not 2D pseudo-labels)
        def gather(key: str) -> torch.Tensor:
            t = batch[key]
            idx = a.gt_index
            if t.dim() == 2:
                return torch.gather(t, 1, idx)[fg]
            return torch.gather(t, 1, idx[..., None].expand(-1, -1, t.shape[-1]))[fg]

        has3d = gather("gt_has3d").bool()
        w3 = weight * has3d
        norm3 = w3.sum().clamp(min=1e-6) if bool(has3d.any()) else None
        if norm3 is None:
            losses.update(depth_obj=zero, size=zero, angle=zero, offset=zero)
            return losses
        fx = batch["K"][:, 0, 0][:, None].expand_as(fg)[fg]
        raw = det[fg]
        tgt_logd = torch.log(gather("gt_depth").clamp(min=1e-3) * self.f_ref / fx)
        losses["depth_obj"] = (F.l1_loss(raw[:, lay["depth"]].squeeze(-1), tgt_logd, reduction="none") * w3).sum() / norm3
        tgt_size = torch.log(gather("gt_size").clamp(min=1e-2))
        losses["size"] = (F.l1_loss(raw[:, lay["size"]], tgt_size, reduction="none").mean(-1) * w3).sum() / norm3
        alpha = gather("gt_alpha")
        tgt_angle = torch.stack([alpha.sin(), alpha.cos()], -1)
        losses["angle"] = (F.l1_loss(raw[:, lay["angle"]], tgt_angle, reduction="none").mean(-1) * w3).sum() / norm3
        tgt_off = (gather("gt_center_uv") - anc) / st
        losses["offset"] = (F.l1_loss(raw[:, lay["offset"]], tgt_off, reduction="none").mean(-1) * w3).sum() / norm3
        return losses


def silog_loss(pred: torch.Tensor, gt: torch.Tensor, valid: torch.Tensor, lam: float = 0.85) -> torch.Tensor:
    """Scale-invariant log loss over valid pixels (per image, then averaged)."""
    g = (torch.log(pred.clamp(min=1e-3)) - torch.log(gt.clamp(min=1e-3))) * valid
    n = valid.flatten(1).sum(1).clamp(min=1.0)
    mean = g.flatten(1).sum(1) / n
    mean_sq = g.pow(2).flatten(1).sum(1) / n
    has = valid.flatten(1).any(1)
    per_image = torch.sqrt((mean_sq - lam * mean.pow(2)).clamp(min=1e-8))
    return (per_image * has).sum() / has.sum().clamp(min=1)


def gradient_matching_loss(pred: torch.Tensor, gt: torch.Tensor, valid: torch.Tensor, scales: int = 4
                           ) -> torch.Tensor:
    """Multi-scale gradient matching of the log-depth residual (MiDaS, Ranftl et al. 2020)."""
    r = (torch.log(pred.clamp(min=1e-3)) - torch.log(gt.clamp(min=1e-3))) * valid
    total = pred.sum() * 0.0
    for s in range(scales):
        step = 2 ** s
        rs, vs = r[..., ::step, ::step], valid[..., ::step, ::step]
        gx = (rs[..., :, 1:] - rs[..., :, :-1]).abs() * (vs[..., :, 1:] * vs[..., :, :-1])
        gy = (rs[..., 1:, :] - rs[..., :-1, :]).abs() * (vs[..., 1:, :] * vs[..., :-1, :])
        total = total + (gx.sum() + gy.sum()) / vs.sum().clamp(min=1.0)
    return total / scales


class DepthLoss:
    def __init__(self, weights: LossWeights | None = None, min_depth: float = 1e-3, max_depth: float = 80.0):
        self.w = weights or LossWeights()
        self.min_depth, self.max_depth = min_depth, max_depth

    def __call__(self, pred: torch.Tensor, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        gt = batch["depth"]
        valid = ((gt > self.min_depth) & (gt < self.max_depth)).float()
        pred = pred.float()
        out = {"depth": silog_loss(pred, gt, valid)}
        dense = batch.get("depth_dense")
        if dense is not None and bool(dense.any()):
            d = dense.bool()
            out["depth_grad"] = gradient_matching_loss(pred[d], gt[d], valid[d])
        else:
            out["depth_grad"] = pred.sum() * 0.0
        return out


class PerceptionLoss:
    """Detection + depth losses, weighted by :class:`LossWeights`; returns (total, parts)."""

    def __init__(self, num_classes: int, f_ref: float, weights: LossWeights | None = None):
        self.w = weights or LossWeights()
        self.det = DetectionLoss(num_classes, f_ref, self.w)
        self.depth = DepthLoss(self.w)

    def __call__(self, outputs: dict[str, torch.Tensor], anchors: torch.Tensor, strides: torch.Tensor,
                 batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        parts = self.det(outputs["det"], anchors, strides, batch)
        if "depth" in batch:
            parts.update(self.depth(outputs["depth"], batch))
        total = sum(getattr(self.w, k) * v for k, v in parts.items())
        return total, {k: float(v.detach()) for k, v in parts.items()}


class Criterion(Protocol):
    """What the training loops call as the loss: :class:`PerceptionLoss` and wrappers of it
    (e.g. :class:`perception.train.distill.DistillationLoss`)."""

    def __call__(self, outputs: dict[str, torch.Tensor], anchors: torch.Tensor, strides: torch.Tensor,
                 batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]: ...
