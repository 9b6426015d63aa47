"""PerceptionNet: RepVGG backbone + Rep-PAN neck + detection head + intrinsics-aware depth head.

Input: float RGB in [0, 1], NCHW (normalisation is inside the model, so exported graphs take
raw [0, 1] input). ``B`` is cameras x time stacked: all cameras of a rig run in one batch.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from perception.data.classes import CLASSES
from perception.nn.backbone import BackboneConfig, RepBackbone
from perception.nn.heads import DepthHead, DetectionHead, det_channels
from perception.nn.neck import NeckConfig, RepPAN
from perception.nn.postprocess import Detections, decode_detections, make_anchors, select_detections
from perception.nn.reparam import is_reparameterized, reparameterize_model

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MAX_STRIDE = 32
DET_STRIDES = (8, 16, 32)            # default detection levels
NECK_LEVEL = {4: 0, 8: 1, 16: 2, 32: 3}   # index of each stride among the neck's outputs


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to build a :class:`PerceptionNet` (saved inside checkpoints)."""

    name: str = "custom"
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    neck: NeckConfig = field(default_factory=NeckConfig)
    head_width: int = 64
    depth_width: int = 32
    classes: tuple[str, ...] = CLASSES
    f_ref: float = 500.0  # canonical focal length (px) of the depth heads; depth *= fx / f_ref
    pad_input: bool = True  # pad H, W up to a multiple of 32 (else reject with ValueError)
    # detection levels, in the order of the head's outputs; extra levels go last so that a
    # checkpoint with fewer levels initialises the first ones (e.g. (8, 16, 32, 4) for stride 4)
    det_strides: tuple[int, ...] = DET_STRIDES

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        d = dict(d)
        d["backbone"] = BackboneConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in d["backbone"].items()})
        d["neck"] = NeckConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in d["neck"].items()})
        d["classes"] = tuple(d["classes"])
        if "det_strides" in d:
            d["det_strides"] = tuple(d["det_strides"])
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def _in_export_or_trace() -> bool:
    return (torch.jit.is_tracing() or torch.jit.is_scripting() or torch.onnx.is_in_onnx_export()
            or torch.compiler.is_compiling())


class PerceptionNet(nn.Module):
    """Multi-task network: 2D/3D detection + dense metric depth, train or fused (deploy) form."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        block, act = cfg.backbone.block, cfg.backbone.act
        self.backbone = RepBackbone(cfg.backbone)
        self.neck = RepPAN(self.backbone.out_channels, cfg.neck, block, act)
        strides = tuple(cfg.det_strides)
        if not strides or len(set(strides)) != len(strides) or not set(strides) <= set(NECK_LEVEL):
            raise ValueError(f"det_strides {strides}: distinct values from {sorted(NECK_LEVEL)}")
        self.det_head = DetectionHead(tuple(self.neck.out_channels[NECK_LEVEL[s]] for s in strides), cfg.head_width,
                                      cfg.num_classes, strides, block, act)
        self.depth_head = DepthHead(self.neck.out_channels[0], cfg.depth_width, block, act)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).reshape(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).reshape(1, 3, 1, 1), persistent=False)

    # ------------------------------------------------------------------ form
    @property
    def is_reparameterized(self) -> bool:
        return is_reparameterized(self)

    def reparameterize(self) -> "PerceptionNet":
        """Fuse in place into the deploy form (eval mode); idempotent. Returns self."""
        reparameterize_model(self, inplace=True)
        return self

    @property
    def num_classes(self) -> int:
        return self.cfg.num_classes

    @property
    def classes(self) -> tuple[str, ...]:
        return self.cfg.classes

    # ------------------------------------------------------------------ inputs
    def _check_inputs(self, images: torch.Tensor, intrinsics: torch.Tensor | None) -> None:
        if not isinstance(images, torch.Tensor):
            raise ValueError(f"images must be a torch.Tensor [B, 3, H, W], got {type(images).__name__}")
        if images.dim() != 4:
            raise ValueError(f"images must be 4-D [B, 3, H, W], got shape {tuple(images.shape)}")
        if images.shape[1] != 3:
            raise ValueError(f"images must have 3 channels (RGB), got {images.shape[1]} channels "
                             f"(shape {tuple(images.shape)}; expected NCHW)")
        expected = self.mean.dtype
        if images.dtype != expected:
            hint = " (convert uint8 with images.float() / 255)" if not images.is_floating_point() else ""
            raise ValueError(f"images dtype is {images.dtype}, expected {expected} RGB in [0, 1]{hint}")
        H, W = images.shape[-2:]
        if H < MAX_STRIDE or W < MAX_STRIDE:
            raise ValueError(f"image size {W}x{H} is too small: both sides must be at least {MAX_STRIDE} px")
        if not self.cfg.pad_input and (H % MAX_STRIDE or W % MAX_STRIDE):
            raise ValueError(f"image size {W}x{H} is not a multiple of {MAX_STRIDE}; resize it or build the "
                             "model with pad_input=True")
        # the sum is one cheap pass and is finite whenever every value is (images are in [0, 1]);
        # only a non-finite sum pays for the exact element-wise check
        if not bool(torch.isfinite(images.sum())) and not bool(torch.isfinite(images).all()):
            raise ValueError("images contain NaN or Inf values")
        if intrinsics is not None:
            if not isinstance(intrinsics, torch.Tensor) or intrinsics.shape[-2:] != (3, 3) \
                    or intrinsics.dim() not in (2, 3) or (intrinsics.dim() == 3 and intrinsics.shape[0] not in
                                                          (1, images.shape[0])):
                shape = tuple(intrinsics.shape) if isinstance(intrinsics, torch.Tensor) else type(intrinsics).__name__
                raise ValueError(f"intrinsics must be a tensor [B, 3, 3] or [3, 3] matching {images.shape[0]} "
                                 f"images, got {shape}")
            if not bool(torch.isfinite(intrinsics).all()) or bool((intrinsics[..., 0, 0] <= 0).any()):
                raise ValueError("intrinsics contain non-finite values or a non-positive focal length")

    def depth_scale(self, intrinsics: torch.Tensor | None, batch: int) -> torch.Tensor:
        """``fx / f_ref`` per image as ``[B, 1, 1, 1]`` (1 when no intrinsics are given)."""
        if intrinsics is None:
            return self.mean.new_ones(batch, 1, 1, 1)
        fx = intrinsics.to(self.mean.dtype).reshape(-1, 3, 3)[:, 0, 0]
        return (fx / self.cfg.f_ref).expand(batch).reshape(batch, 1, 1, 1)

    # ------------------------------------------------------------------ forward
    def forward(self, images: torch.Tensor, intrinsics: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Raw outputs: ``depth`` [B, 1, H, W] metres at input resolution, ``det`` [B, A, C] raw
        head outputs (see :mod:`perception.nn.heads` for the channel layout and
        :meth:`anchors` for the anchor points). Sizes that are not multiples of 32 are padded
        on the right and bottom (boxes keep the input's pixel coordinates)."""
        tracing = _in_export_or_trace()
        if not tracing:
            self._check_inputs(images, intrinsics)
        B, _, H, W = images.shape
        x = (images - self.mean) / self.std
        if self.training and torch.is_grad_enabled():
            # Training backward in channels_last corrupts memory on torch 2.13 CPU (seen here as
            # random segfaults); inference is fine and faster in channels_last.
            x = x.contiguous()
        pad_h, pad_w = (-H) % MAX_STRIDE, (-W) % MAX_STRIDE
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))  # zeros after normalisation = the mean colour
        feats = self.backbone(x)
        d2, pyramid = self.neck(feats)
        levels = (d2, *pyramid)                     # strides 4, 8, 16, 32
        det = self.det_head([levels[NECK_LEVEL[s]] for s in self.cfg.det_strides])
        log_depth = self.depth_head(d2)
        log_depth = F.interpolate(log_depth, scale_factor=4.0, mode="bilinear", align_corners=False)
        depth = log_depth[..., :H, :W].clamp(-10.0, 10.0).exp() * self.depth_scale(intrinsics, B)
        return {"depth": depth, "det": det}

    def anchors(self, height: int, width: int, device: torch.device | str | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Anchor points ``[A, 2]`` (pixels) and strides ``[A]`` for an input of this size."""
        Hp, Wp = height + (-height) % MAX_STRIDE, width + (-width) % MAX_STRIDE
        return make_anchors(Hp, Wp, tuple(self.cfg.det_strides), device or self.mean.device)

    @torch.inference_mode()
    def predict(self, images: torch.Tensor, intrinsics: torch.Tensor | None = None, score_thresh: float = 0.25,
                iou_thresh: float = 0.6, max_det: int = 300) -> list[Detections]:
        """Detections per image: boxes (xyxy px), scores, labels, and 3D attributes.

        ``intrinsics`` ``[B, 3, 3]`` (or ``[3, 3]`` shared) at the input resolution; without
        them fx = fy = ``f_ref`` and the principal point at the image centre are assumed.
        """
        B, _, H, W = images.shape
        out = self.forward(images, intrinsics)
        K = self.default_intrinsics(H, W, B) if intrinsics is None else intrinsics.reshape(-1, 3, 3).expand(B, 3, 3)
        anchors, strides = self.anchors(H, W, out["det"].device)
        decoded = decode_detections(out["det"], anchors, strides, self.num_classes, K, self.cfg.f_ref)
        return select_detections(decoded, (H, W), score_thresh, iou_thresh, max_det, classes=self.classes)

    def default_intrinsics(self, height: int, width: int, batch: int = 1) -> torch.Tensor:
        f = self.cfg.f_ref
        K = torch.tensor([[f, 0, (width - 1) / 2], [0, f, (height - 1) / 2], [0, 0, 1]], device=self.mean.device)
        return K.expand(batch, 3, 3)
