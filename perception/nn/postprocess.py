"""Decode raw detection outputs into boxes with 3D attributes, and class-aware NMS.

NMS uses OpenCV's ``cv2.dnn.NMSBoxesBatched`` (C++, class-aware); torchvision is not a
dependency of this project.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from perception.nn.heads import det_layout


@dataclass
class Detections:
    """Detections of one image (all tensors on CPU, float32).

    ``boxes`` [N, 4] xyxy pixels of the input image, ``scores`` [N], ``labels`` [N] int64;
    3D attributes in the camera frame (OpenCV axes): ``center_cam`` [N, 3] metres (geometric
    centre), ``size`` [N, 3] (length, width, height) metres, ``yaw`` [N] rotation about the
    camera +y axis (KITTI ``rotation_y``: length axis along ``(cos yaw, 0, -sin yaw)``).
    """

    boxes: torch.Tensor
    scores: torch.Tensor
    labels: torch.Tensor
    center_cam: torch.Tensor
    size: torch.Tensor
    yaw: torch.Tensor
    classes: tuple[str, ...] = field(default=())

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    @property
    def depth(self) -> torch.Tensor:
        """Camera z of each object's centre, metres."""
        return self.center_cam[:, 2]

    @property
    def label_names(self) -> list[str]:
        return [self.classes[i] if i < len(self.classes) else str(i) for i in self.labels.tolist()]

    @classmethod
    def empty(cls, classes: tuple[str, ...] = ()) -> "Detections":
        z = torch.zeros
        return cls(z(0, 4), z(0), torch.zeros(0, dtype=torch.long), z(0, 3), z(0, 3), z(0), classes)


def make_anchors(height: int, width: int, strides: tuple[int, ...], device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """Anchor points (cell centres, pixels) ``[A, 2]`` and their strides ``[A]``, in the order
    of the detection head's output (level by level, row-major)."""
    points, stride_list = [], []
    for s in strides:
        h, w = height // s, width // s
        ys = (torch.arange(h, device=device, dtype=dtype) + 0.5) * s
        xs = (torch.arange(w, device=device, dtype=dtype) + 0.5) * s
        gy, gx = torch.meshgrid(ys, xs, indexing="ij")
        points.append(torch.stack([gx, gy], -1).reshape(-1, 2))
        stride_list.append(torch.full((h * w,), float(s), device=device, dtype=dtype))
    return torch.cat(points), torch.cat(stride_list)


def decode_detections(det: torch.Tensor, anchors: torch.Tensor, strides: torch.Tensor, num_classes: int,
                      intrinsics: torch.Tensor | None, f_ref: float) -> dict[str, torch.Tensor]:
    """Decode the raw ``[B, A, C]`` head output into per-anchor boxes and 3D attributes.

    ``intrinsics`` ``[B, 3, 3]`` at the network input resolution; ``None`` means fx = fy =
    ``f_ref`` with the principal point at the image centre (documented fallback).
    """
    det = det.float()
    lay = det_layout(num_classes)
    s = strides[None, :, None]
    ltrb = F.softplus(det[..., lay["ltrb"]]) * s
    pts = anchors[None]
    boxes = torch.cat([pts - ltrb[..., :2], pts + ltrb[..., 2:]], -1)
    center_uv = pts + det[..., lay["offset"]] * s
    B = det.shape[0]
    if intrinsics is None:
        raise ValueError("decode_detections needs intrinsics [B, 3, 3]")
    K = intrinsics.to(det.device, torch.float32).expand(B, 3, 3)
    fx, fy = K[:, 0, 0, None], K[:, 1, 1, None]
    cx, cy = K[:, 0, 2, None], K[:, 1, 2, None]
    depth = det[..., lay["depth"]].clamp(-10, 10).exp().squeeze(-1) * (fx / f_ref)
    x = (center_uv[..., 0] - cx) / fx * depth
    y = (center_uv[..., 1] - cy) / fy * depth
    center_cam = torch.stack([x, y, depth], -1)
    size = det[..., lay["size"]].clamp(-5, 5).exp()
    sin_cos = det[..., lay["angle"]]
    alpha = torch.atan2(sin_cos[..., 0], sin_cos[..., 1])
    yaw = alpha + torch.atan2(x, depth)
    yaw = torch.atan2(torch.sin(yaw), torch.cos(yaw))
    return {"boxes": boxes, "scores": det[..., lay["cls"]].sigmoid(), "center_cam": center_cam,
            "size": size, "yaw": yaw, "alpha": alpha}


def nms_class_aware(boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, iou_thresh: float
                    ) -> torch.Tensor:
    """Indices kept by class-aware NMS, sorted by descending score (OpenCV implementation)."""
    if boxes.numel() == 0:
        return torch.zeros(0, dtype=torch.long)
    b = boxes.detach().float().cpu().numpy()
    xywh = np.stack([b[:, 0], b[:, 1], b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], 1)
    keep = cv2.dnn.NMSBoxesBatched(xywh.tolist(), scores.detach().float().cpu().numpy().tolist(),
                                   labels.detach().cpu().numpy().astype(np.int32).tolist(), 0.0, float(iou_thresh))
    keep = torch.as_tensor(np.asarray(keep, dtype=np.int64).reshape(-1))
    order = torch.argsort(scores[keep], descending=True)
    return keep[order]


def select_detections(decoded: dict[str, torch.Tensor], image_size: tuple[int, int], score_thresh: float,
                      iou_thresh: float, max_det: int = 300, pre_nms_topk: int = 2000,
                      classes: tuple[str, ...] = ()) -> list[Detections]:
    """Threshold, NMS and clip per image; ``image_size`` is (height, width) of the unpadded input."""
    H, W = image_size
    results = []
    for i in range(decoded["scores"].shape[0]):
        scores = decoded["scores"][i]
        anchor_idx, cls_idx = torch.nonzero(scores > score_thresh, as_tuple=True)
        if anchor_idx.numel() == 0:
            results.append(Detections.empty(classes))
            continue
        sc = scores[anchor_idx, cls_idx]
        if sc.numel() > pre_nms_topk:
            sc, top = sc.topk(pre_nms_topk)
            anchor_idx, cls_idx = anchor_idx[top], cls_idx[top]
        boxes = decoded["boxes"][i, anchor_idx]
        boxes = torch.stack([boxes[:, 0].clamp(0, W), boxes[:, 1].clamp(0, H),
                             boxes[:, 2].clamp(0, W), boxes[:, 3].clamp(0, H)], 1)
        valid = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        boxes, sc, anchor_idx, cls_idx = boxes[valid], sc[valid], anchor_idx[valid], cls_idx[valid]
        keep = nms_class_aware(boxes, sc, cls_idx, iou_thresh)[:max_det]
        a = anchor_idx[keep]
        results.append(Detections(
            boxes=boxes[keep].cpu(), scores=sc[keep].cpu(), labels=cls_idx[keep].cpu(),
            center_cam=decoded["center_cam"][i, a].cpu(), size=decoded["size"][i, a].cpu(),
            yaw=decoded["yaw"][i, a].cpu(), classes=classes))
    return results
