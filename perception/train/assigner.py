"""Task-aligned assigner (TOOD, Feng et al. 2021; as used by YOLOv6/YOLOv8/PP-YOLOE).

For each ground-truth box, the anchors whose points lie inside it are ranked by the
alignment metric ``t = score^alpha * IoU^beta`` (predicted score of the GT's class, IoU of the
predicted box with the GT); the ``topk`` best become positives. An anchor claimed by several
GTs keeps the one it overlaps most. Soft targets are ``t`` normalised per GT to its best IoU,
so classification learns localisation quality (what varifocal loss expects).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from perception.train.boxes import pairwise_iou


@dataclass
class Assignment:
    fg_mask: torch.Tensor  # [B, A] bool
    gt_index: torch.Tensor  # [B, A] index into the padded GTs of that image
    target_scores: torch.Tensor  # [B, A, C] soft class targets
    target_boxes: torch.Tensor  # [B, A, 4]
    ignore_mask: torch.Tensor  # [B, A] bool: anchors inside ignore regions (no classification loss)


class TaskAlignedAssigner:
    def __init__(self, topk: int = 13, alpha: float = 1.0, beta: float = 6.0, eps: float = 1e-9):
        self.topk, self.alpha, self.beta, self.eps = topk, alpha, beta, eps

    @torch.no_grad()
    def __call__(self, pred_scores: torch.Tensor, pred_boxes: torch.Tensor, anchors: torch.Tensor,
                 gt_labels: torch.Tensor, gt_boxes: torch.Tensor, gt_mask: torch.Tensor,
                 ignore_boxes: torch.Tensor | None = None) -> Assignment:
        """``pred_scores`` [B, A, C] probabilities, ``pred_boxes`` [B, A, 4] xyxy px, ``anchors``
        [A, 2] px, ``gt_labels`` [B, M] long, ``gt_boxes`` [B, M, 4], ``gt_mask`` [B, M] bool
        (padding), ``ignore_boxes`` [B, K, 4] (NaN-padded) regions without classification loss."""
        B, A, C = pred_scores.shape
        M = gt_boxes.shape[1]
        device = pred_scores.device
        ignore_mask = self._inside_any(anchors, ignore_boxes) if ignore_boxes is not None else \
            torch.zeros(B, A, dtype=torch.bool, device=device)
        if M == 0 or not bool(gt_mask.any()):
            return Assignment(torch.zeros(B, A, dtype=torch.bool, device=device),
                              torch.zeros(B, A, dtype=torch.long, device=device),
                              torch.zeros_like(pred_scores), torch.zeros(B, A, 4, device=device), ignore_mask)
        pred_scores, pred_boxes, gt_boxes = pred_scores.float(), pred_boxes.float(), gt_boxes.float()
        # anchors inside each GT box
        lt = anchors[None, None] - gt_boxes[:, :, None, :2]
        rb = gt_boxes[:, :, None, 2:] - anchors[None, None]
        inside = torch.cat([lt, rb], -1).amin(-1) > self.eps  # [B, M, A]
        inside &= gt_mask[:, :, None]
        overlaps = pairwise_iou(gt_boxes, pred_boxes).clamp(min=0) * inside  # [B, M, A]
        labels = gt_labels.clamp(min=0)
        cls_scores = torch.gather(pred_scores.transpose(1, 2), 1, labels[:, :, None].expand(B, M, A))
        align = cls_scores.pow(self.alpha) * overlaps.pow(self.beta) * inside
        # top-k anchors per GT
        k = min(self.topk, A)
        top_idx = align.topk(k, dim=-1).indices
        is_top = torch.zeros_like(inside)
        is_top.scatter_(-1, top_idx, True)
        pos = is_top & inside & (align > 0)
        # anchors claimed by several GTs keep the GT with the highest IoU
        multi = pos.sum(1) > 1  # [B, A]
        if bool(multi.any()):
            best = overlaps.argmax(1)  # [B, A]
            best_onehot = torch.zeros_like(pos).scatter_(1, best[:, None], True)
            pos = torch.where(multi[:, None], best_onehot & inside, pos)
        fg = pos.any(1)
        gt_index = pos.float().argmax(1)  # [B, A]
        tgt_labels = torch.gather(labels, 1, gt_index)
        tgt_boxes = torch.gather(gt_boxes, 1, gt_index[..., None].expand(B, A, 4))
        # normalised alignment as soft targets
        align = align * pos
        max_align = align.amax(-1, keepdim=True)
        max_iou = (overlaps * pos).amax(-1, keepdim=True)
        norm = (align * max_iou / (max_align + self.eps)).amax(1)  # [B, A]
        target_scores = torch.zeros_like(pred_scores)
        target_scores.scatter_(-1, tgt_labels[..., None], norm[..., None])
        target_scores *= fg[..., None]
        return Assignment(fg, gt_index, target_scores, tgt_boxes, ignore_mask & ~fg)

    @staticmethod
    def _inside_any(anchors: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        if boxes.numel() == 0:
            return torch.zeros(boxes.shape[0], anchors.shape[0], dtype=torch.bool, device=anchors.device)
        lt = anchors[None, None] - boxes[:, :, None, :2]
        rb = boxes[:, :, None, 2:] - anchors[None, None]
        inside = torch.cat([lt, rb], -1).amin(-1) > 0  # NaN padding compares False
        return inside.any(1)
