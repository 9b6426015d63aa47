"""Binary networks: BWN (binary weights, per-output-channel scale) and XNOR (binary weights and
binary activations), Rastegari et al., ECCV 2016, trained with a straight-through estimator.

Acts on the fused model: every *inner* 3x3 convolution (all 3x3 convs except the stem, the
first layer that sees pixels) becomes a :class:`BinaryConv2d`; 1x1 convs and the prediction
layers stay in fp32, as is usual. XNOR binarises the input as ``sign(x - t)`` with a learned
per-channel threshold ``t`` (inputs come after a ReLU, so plain ``sign(x)`` would be constant)
and rescales with a learned per-output-channel factor. Gradients: weights use the identity
STE, activations the clipped STE (``1_{|x - t| <= 1}``).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from perception.compress.common import FitConfig, ProxyData, describe, evaluate, fit, model_flops, write_report
from perception.nn.checkpoint import model_from_config
from perception.nn.model import PerceptionNet
from perception.nn.reparam import reparameterize_model

log = logging.getLogger(__name__)


class _SignSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, clip: bool) -> torch.Tensor:  # noqa: ANN001
        ctx.save_for_backward(x)
        ctx.clip = clip
        return torch.where(x >= 0, torch.ones_like(x), -torch.ones_like(x))

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # noqa: ANN001, ANN205
        (x,) = ctx.saved_tensors
        return (grad * (x.abs() <= 1).to(grad.dtype) if ctx.clip else grad), None


def sign_ste(x: torch.Tensor, clip: bool = False) -> torch.Tensor:
    return _SignSTE.apply(x, clip)


class BinaryConv2d(nn.Conv2d):
    """3x3 conv with weights ``alpha_o * sign(W)`` (alpha = mean |W| per output channel);
    ``mode="xnor"`` also binarises the input to ``sign(x - threshold)``."""

    def __init__(self, conv: nn.Conv2d, mode: str = "bwn"):
        super().__init__(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                         conv.dilation, conv.groups, bias=conv.bias is not None)
        if mode not in ("bwn", "xnor"):
            raise ValueError(f"mode must be bwn or xnor, got {mode!r}")
        self.mode = mode
        self.weight.data.copy_(conv.weight.data)
        if conv.bias is not None:
            self.bias.data.copy_(conv.bias.data)
        self.threshold = nn.Parameter(torch.zeros(conv.in_channels)) if mode == "xnor" else None
        self.out_scale = nn.Parameter(torch.ones(conv.out_channels)) if mode == "xnor" else None

    def binary_weight(self) -> torch.Tensor:
        alpha = self.weight.abs().mean(dim=(1, 2, 3), keepdim=True)
        return alpha * sign_ste(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "xnor":
            x = sign_ste(x - self.threshold.view(1, -1, 1, 1), clip=True)
        y = F.conv2d(x, self.binary_weight(), None, self.stride, self.padding, self.dilation, self.groups)
        if self.out_scale is not None:
            y = y * self.out_scale.view(1, -1, 1, 1)
        return y if self.bias is None else y + self.bias.view(1, -1, 1, 1)


def binarizable(model: PerceptionNet) -> list[str]:
    """Names of the inner 3x3 convs of a fused model (all 3x3 convs but the stem's)."""
    stem = {n for n, _ in model.backbone.stem.named_modules(prefix="backbone.stem")}
    return [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and not isinstance(m, BinaryConv2d)
            and m.kernel_size == (3, 3) and n not in stem]


@torch.no_grad()
def binarize_model(model: PerceptionNet, mode: str = "bwn", calibration: torch.Tensor | None = None) -> PerceptionNet:
    """Replace the inner 3x3 convs of ``model`` (fused in place if needed) by binary convs.

    With ``calibration`` images, XNOR thresholds start at each channel's mean input and the
    output scales at the ratio that keeps each layer's output magnitude."""
    if not model.is_reparameterized:
        reparameterize_model(model, inplace=True)
    names = binarizable(model)
    inputs: dict[str, torch.Tensor] = {}
    if calibration is not None and mode == "xnor":
        mods = dict(model.named_modules())
        hooks = [mods[n].register_forward_hook(lambda m, i, o, n=n: inputs.__setitem__(n, i[0].detach()))
                 for n in names]
        model.eval()(calibration)
        for h in hooks:
            h.remove()
    for n in names:
        parent_name, _, child = n.rpartition(".")
        parent = model.get_submodule(parent_name)
        conv = getattr(parent, child)
        b = BinaryConv2d(conv, mode)
        if n in inputs:
            x = inputs[n]
            b.threshold.copy_(x.mean(dim=(0, 2, 3)))
            ref = F.conv2d(x, conv.weight, None, conv.stride, conv.padding, conv.dilation, conv.groups)
            b.out_scale.fill_(1.0)
            got = F.conv2d(torch.where(x >= b.threshold.view(1, -1, 1, 1), 1.0, -1.0), b.binary_weight(), None,
                           conv.stride, conv.padding, conv.dilation, conv.groups)
            b.out_scale.copy_((ref.abs().mean(dim=(0, 2, 3)) / got.abs().mean(dim=(0, 2, 3)).clamp(min=1e-6)))
        setattr(parent, child, b)
    model.binary_mode = mode  # type: ignore[attr-defined]
    return model


def operation_counts(model: PerceptionNet, size: tuple[int, int]) -> dict[str, Any]:
    """MACs in binary vs fp layers and the theoretical savings (XNOR-Net's accounting:
    a 64-bit XNOR+popcount does 64 binary MACs; BWN turns multiply-adds into adds)."""
    macs: dict[str, int] = {}
    hooks = []
    for n, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(lambda mod, i, o, n=n: macs.__setitem__(
                n, o.numel() * mod.in_channels // mod.groups * mod.kernel_size[0] * mod.kernel_size[1])))
    with torch.no_grad():
        model.eval()(torch.rand(1, 3, *size))
    for h in hooks:
        h.remove()
    mods = dict(model.named_modules())
    binary = sum(v for n, v in macs.items() if isinstance(mods[n], BinaryConv2d))
    total = sum(macs.values())
    mode = getattr(model, "binary_mode", "bwn")
    fp = total - binary
    if mode == "xnor":
        effective = fp + binary / 64
        note = "binary MACs as XNOR+popcount, 64 per 64-bit word (XNOR-Net's ~58x on those layers)"
    else:
        effective = fp + binary / 2  # a multiply-add becomes an add/sub: counted as half the work
        note = "binary-weight MACs need no multiplications (add/sub only): counted as half a MAC"
    return {"macs_total": total, "macs_binary": binary, "binary_fraction": binary / max(1, total),
            "effective_macs": effective, "theoretical_speedup": total / max(1.0, effective), "accounting": note}


def storage_bytes(model: PerceptionNet) -> dict[str, int]:
    """1 bit per binary weight, fp32 for everything else (scales, thresholds, biases, fp layers)."""
    bits = 0
    fp32 = 0
    for n, p in model.named_parameters():
        owner = model.get_submodule(n.rpartition(".")[0]) if "." in n else model
        if isinstance(owner, BinaryConv2d) and n.endswith(".weight"):
            bits += p.numel() + 32 * p.shape[0]  # signs + per-channel alpha
        else:
            fp32 += p.numel()
    return {"binary_bits_bytes": bits // 8, "fp32_params_bytes": fp32 * 4, "total_bytes": bits // 8 + fp32 * 4,
            "fp32_equivalent_bytes": sum(p.numel() for p in model.parameters()) * 4}


def save_binary(model: PerceptionNet, path: str | Path) -> Path:
    """safetensors with the binary weights packed 8 per byte (``<name>.sign_bits``)."""
    state = {}
    binary = {n for n, m in model.named_modules() if isinstance(m, BinaryConv2d)}
    shapes = {}
    for k, v in model.state_dict().items():
        if k.rpartition(".")[0] in binary and k.endswith(".weight"):
            signs = (v >= 0).flatten().numpy()
            state[k + ".sign_bits"] = torch.from_numpy(np.packbits(signs))
            state[k + ".alpha"] = v.abs().mean(dim=(1, 2, 3)).contiguous()
            shapes[k] = list(v.shape)
        else:
            state[k] = v.detach().contiguous()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path), metadata={"format": "perception-binary", "mode": model.binary_mode,
                                         "config": json.dumps(model.cfg.to_dict()), "shapes": json.dumps(shapes)})
    return path


def load_binary(path: str | Path) -> PerceptionNet:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    model = model_from_config(meta["config"])
    binarize_model(model, meta["mode"])
    state = load_file(str(path))
    for k, shape in json.loads(meta["shapes"]).items():
        bits = np.unpackbits(state.pop(k + ".sign_bits").numpy())[: int(np.prod(shape))]
        alpha = state.pop(k + ".alpha")
        # any weight with these signs and per-channel mean |w| = alpha gives the same binary conv
        state[k] = torch.from_numpy(bits.astype(np.float32) * 2 - 1).reshape(shape) * alpha.view(-1, 1, 1, 1)
    model.load_state_dict(state)
    return model.eval()


@dataclass
class BinaryConfig:
    mode: str = "bwn"
    finetune_steps: int = 200


def run_binary(model: PerceptionNet, data: ProxyData, fit_cfg: FitConfig, cfg: BinaryConfig, out: Path
               ) -> dict[str, Any]:
    """Binarize a trained model's inner 3x3 convs, fine-tune with the STE, report."""
    dense = reparameterize_model(model)
    dense_row = {**evaluate(dense, data), **describe(dense, data.size)}
    b = binarize_model(reparameterize_model(model), cfg.mode, data.train["images"][:16])
    before = evaluate(b, data)
    fit(b, data, FitConfig(**{**asdict(fit_cfg), "steps": cfg.finetune_steps}))
    path = save_binary(b, out / "model.safetensors")
    reloaded = load_binary(path)
    with torch.no_grad():
        x = data.val["images"][:2]
        diff = float((reloaded(x)["det"] - b(x)["det"]).abs().max())
    report = {"config": asdict(cfg), "fit": asdict(fit_cfg), "data": data.description, "dense_fused": dense_row,
              "binarized_before_finetune": before, "binarized": {**evaluate(b, data), **describe(b, data.size)},
              "ops": operation_counts(b, data.size), "storage": storage_bytes(b), "flops_fp_equivalent":
              model_flops(b, data.size), "file": str(path), "file_bytes": path.stat().st_size,
              "reload_max_abs_diff": diff,
              "note": "latency is of the fp32 simulation (sign() then a float conv): no binary kernels here"}
    write_report(out, f"binary-{cfg.mode}", report)
    return report
