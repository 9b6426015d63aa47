"""Post-training static INT8 quantization to a Q/DQ ONNX model (ONNX Runtime's tools).

``quantize_static`` in QDQ format with per-channel int8 weights, calibrated on frames the
model will see: synthetic frames (:class:`perception.data.synth.SynthDataset`, rendered from a
seed) plus real ones when the shared samples are present (nuScenes key-frame cameras and the
dashcam test images under ``$PERCEPTION_SHARED_DATA`` or ``../shared/data``; read in place,
never copied). The result runs on ONNX Runtime (CPU: VNNI int8 kernels) and is the input of a
TensorRT INT8 build (explicit quantization, ``activation="int8"`` for symmetric activations).

What is quantized: the convolutions (with their ReLU fused), the concats/resizes of the neck
run on int8 tensors where ONNX Runtime fuses them; the decode tail (softplus, exp, atan) stays
fp32. Calibration: MinMax by default; ``percentile`` clips activation outliers (slower).

:func:`fidelity` compares the INT8 and fp32 files on the same inputs (depth relative error,
detection-output cosine similarity and SNR): the measure available before trained weights.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
CONV_OPS = ["Conv", "Relu", "Concat", "Resize"]


def shared_data_dir() -> Path:
    return Path(os.environ.get("PERCEPTION_SHARED_DATA", ROOT.parent / "shared" / "data"))


# ---------------------------------------------------------------------------- calibration frames
def _resize_with_K(image: np.ndarray, K: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    import cv2

    h0, w0 = image.shape[:2]
    sx, sy = width / w0, height / h0
    out = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
    K = K.astype(np.float32).copy()
    K[0, :] *= sx
    K[1, :] *= sy
    return out, K


def _chw(image: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32) / 255.0


def synthetic_frames(size: tuple[int, int], frames: int, seed: int = 1234, rig: str = "surround6"
                     ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(image [3, H, W] float 0..1, K [3, 3])`` per camera of ``frames`` synthetic frames."""
    from perception.data.synth import SynthDataset

    ds = SynthDataset(rig, seed=seed, frames=frames, size=size, episode_frames=max(1, frames // 2))
    for sample in ds:
        for img, cam in zip(sample.images, sample.cameras):
            yield _chw(img), np.asarray(cam.K, np.float32)


def real_frames(size: tuple[int, int], root: str | os.PathLike | None = None, limit: int = 12
                ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Real camera images from the shared samples (skipped silently when absent).

    nuScenes key-frame cameras use their calibrated K (from the ``.pkl`` when readable, else a
    1266 px focal length); dashcam test images use a 1156 px focal length (its calibration).
    Images are resized to ``size`` with K scaled alike (aspect changes are small: 16:9 vs 7:4).
    """
    import cv2

    root = Path(root) if root else shared_data_dir()
    if not root.is_dir():
        log.info("no shared data at %s: calibrating on synthetic frames only", root)
        return
    H, W = size
    files = sorted((root / "nuscenes_keyframe").glob("*CAM_*.jpg")) + sorted((root / "dashcam" / "test_images")
                                                                            .glob("*.jpg"))
    count = 0
    for f in files:
        bgr = cv2.imread(str(f))
        if bgr is None:
            continue
        h0, w0 = bgr.shape[:2]
        focal = 1266.4 if "CAM_" in f.name else 1156.9
        K = np.array([[focal, 0, w0 / 2], [0, focal, h0 / 2], [0, 0, 1]], np.float32)
        img, K = _resize_with_K(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), K, H, W)
        yield _chw(img), K
        count += 1
        if count >= limit:
            return


def calibration_batches(size: tuple[int, int], synth_frames: int = 4, real: bool = True, batch: int = 6,
                        seed: int = 1234) -> list[dict[str, np.ndarray]]:
    """Input feeds ``{"images": [b,3,H,W], "intrinsics": [b,3,3]}`` for calibration/evaluation."""
    items = list(synthetic_frames(size, synth_frames, seed)) if synth_frames > 0 else []
    if real:
        items += list(real_frames(size))
    if not items:
        raise ValueError("no calibration frames (synth_frames=0 and no shared data)")
    batches = []
    for i in range(0, len(items), batch):
        chunk = items[i:i + batch]
        batches.append({"images": np.stack([c[0] for c in chunk]), "intrinsics": np.stack([c[1] for c in chunk])})
    log.info("calibration: %d images in %d batches (%d synthetic frames, real=%s)", len(items), len(batches),
             synth_frames, real)
    return batches


class FeedReader:
    """``onnxruntime.quantization.CalibrationDataReader`` over a list of feeds."""

    def __init__(self, feeds: Iterable[dict[str, np.ndarray]]) -> None:
        self._feeds = list(feeds)
        self._it = iter(self._feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = iter(self._feeds)


# ---------------------------------------------------------------------------- quantization
@dataclass
class QuantizeResult:
    path: str
    source: str
    activation: str
    method: str
    per_channel: bool
    calibration_images: int
    node_counts: dict[str, int] = field(default_factory=dict)
    excluded: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


HEAD_OUTPUT_CONVS = ("/cls_pred/", "/reg_pred/", "/depth_head/pred/")


def head_output_convs(path: str | os.PathLike, patterns: Sequence[str] = HEAD_OUTPUT_CONVS) -> list[str]:
    """Names of the conv nodes whose name contains one of ``patterns`` (by default the last 1x1
    prediction convs: ``cls_pred``, ``reg_pred``, depth ``pred``)."""
    import onnx

    model = onnx.load(str(path))
    return [n.name for n in model.graph.node if n.op_type == "Conv" and any(k in n.name for k in patterns)]


def quantize_onnx(fp32_path: str | os.PathLike, out_path: str | os.PathLike, feeds: list[dict[str, np.ndarray]],
                  *, per_channel: bool = True, activation: str = "uint8", method: str = "minmax",
                  keep_head_outputs_fp32: bool = True, keep_fp32: Sequence[str] = ()) -> QuantizeResult:
    """Static INT8 (QDQ) quantization of an exported fp32 ONNX file.

    ``activation``: ``uint8`` (asymmetric; the fast U8S8 path of ONNX Runtime on x86) or
    ``int8`` (symmetric, what TensorRT requires). ``keep_head_outputs_fp32`` leaves the final
    1x1 prediction convs in float (a few MFLOPs; their outputs go through exp/softplus where
    an output quantization step would be magnified). ``keep_fp32``: more conv-name substrings
    to leave in float (e.g. ``("reg_conv",)`` for the 3D regression towers of the head).
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    methods = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
               "entropy": CalibrationMethod.Entropy}
    if method not in methods:
        raise ValueError(f"calibration method must be one of {sorted(methods)}, got {method!r}")
    if activation not in ("uint8", "int8"):
        raise ValueError(f"activation must be uint8 or int8, got {activation!r}")
    fp32_path, out_path = Path(fp32_path), Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    pre = out_path.with_suffix(".pre.onnx")
    quant_pre_process(str(fp32_path), str(pre), skip_optimization=False, skip_symbolic_shape=True)
    patterns = (HEAD_OUTPUT_CONVS if keep_head_outputs_fp32 else ()) + tuple(keep_fp32)
    excluded = head_output_convs(pre, patterns) if patterns else []
    extra = {"ActivationSymmetric": activation == "int8", "WeightSymmetric": True}
    if method == "percentile":
        extra["CalibPercentile"] = 99.999
    quantize_static(str(pre), str(out_path), FeedReader(feeds), quant_format=QuantFormat.QDQ,
                    op_types_to_quantize=CONV_OPS, per_channel=per_channel,
                    activation_type=QuantType.QUInt8 if activation == "uint8" else QuantType.QInt8,
                    weight_type=QuantType.QInt8, nodes_to_exclude=excluded, calibrate_method=methods[method],
                    extra_options=extra)
    pre.unlink(missing_ok=True)
    model = onnx.load(str(out_path))
    src_meta = {p.key: p.value for p in onnx.load(str(fp32_path), load_external_data=False).metadata_props}
    del model.metadata_props[:]
    src_meta.update({"perception.quantized": "int8-qdq", "perception.quant_activation": activation,
                     "perception.quant_method": method, "perception.quant_fp32_nodes": str(len(excluded))})
    for k, v in src_meta.items():
        model.metadata_props.add(key=k, value=v)
    onnx.save(model, str(out_path))
    from perception.deploy.export import node_counts

    counts = node_counts(model.graph)
    if not counts.get("QuantizeLinear") or not counts.get("DequantizeLinear"):
        raise RuntimeError(f"{out_path}: quantization produced no Q/DQ nodes ({counts})")
    n_images = sum(int(f["images"].shape[0]) for f in feeds)
    log.info("quantized %s -> %s (%d calibration images, %s activations, %s)", fp32_path.name, out_path.name,
             n_images, activation, method)
    return QuantizeResult(str(out_path), str(fp32_path), activation, method, per_channel, n_images, counts, excluded)


# ---------------------------------------------------------------------------- fidelity
def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-30))


def _snr_db(ref: np.ndarray, test: np.ndarray) -> float:
    ref, test = ref.astype(np.float64), test.astype(np.float64)
    noise = float(((ref - test) ** 2).mean())
    return float(10 * np.log10(float((ref ** 2).mean()) / max(noise, 1e-30)))


def fidelity(fp32_path: str | os.PathLike, int8_path: str | os.PathLike, feeds: list[dict[str, np.ndarray]],
             num_classes: int | None = None, threads: int | None = None) -> dict[str, float]:
    """How close the INT8 model's outputs are to the fp32 model's on the same inputs.

    ``depth_abs_rel``: mean |d8 - d32| / d32 over all pixels; ``depth_snr_db``: of log-depth
    around its mean; ``det_cosine``/``det_snr_db``: of the raw detection tensor minus its fp32
    per-channel mean (constant biases are not signal); ``cls_cosine``/``reg_cosine``: the same
    for the class-logit / regression channels; ``score_mae``: mean |sigmoid difference| of class scores; ``top_score_agreement``:
    fraction of the fp32 top-100 (anchor, class) scores also in the INT8 top-100.
    """
    from perception.deploy.backends import ort_session

    s32, s8 = ort_session(fp32_path, threads=threads), ort_session(int8_path, threads=threads)
    acc: dict[str, list[float]] = {}
    for feed in feeds:
        d32, t32 = s32.run(["depth", "det"], feed)
        d8, t8 = s8.run(["depth", "det"], feed)
        nc = num_classes or (t32.shape[-1] - 12)
        c32, c8 = t32[..., :nc], t8[..., :nc]
        sig32, sig8 = 1 / (1 + np.exp(-c32)), 1 / (1 + np.exp(-c8))
        top32 = set(np.argsort(sig32.ravel())[-100:].tolist())
        top8 = set(np.argsort(sig8.ravel())[-100:].tolist())
        mean = t32.mean(axis=(0, 1), keepdims=True)  # per-channel bias: not signal
        ld32, ld8 = np.log(d32), np.log(np.maximum(d8, 1e-6))
        vals = {"depth_abs_rel": float(np.mean(np.abs(d8 - d32) / np.maximum(d32, 1e-6))),
                "depth_snr_db": _snr_db(ld32 - ld32.mean(), ld8 - ld32.mean()),
                "det_cosine": _cosine(t32 - mean, t8 - mean), "det_snr_db": _snr_db(t32 - mean, t8 - mean),
                "cls_cosine": _cosine((t32 - mean)[..., :nc], (t8 - mean)[..., :nc]),
                "reg_cosine": _cosine((t32 - mean)[..., nc:], (t8 - mean)[..., nc:]),
                "score_mae": float(np.abs(sig32 - sig8).mean()),
                "top_score_agreement": len(top32 & top8) / 100.0}
        for k, v in vals.items():
            acc.setdefault(k, []).append(v)
    return {k: float(np.mean(v)) for k, v in acc.items()}


def save_json(obj: Any, path: str | os.PathLike) -> None:
    Path(path).write_text(json.dumps(obj, indent=2))


__all__ = ["FeedReader", "QuantizeResult", "calibration_batches", "fidelity", "quantize_onnx", "real_frames",
           "synthetic_frames"]


# ---------------------------------------------------------------------------- untrained stand-ins
def calibrate_bn_statistics(model: Any, feeds: list[dict[str, np.ndarray]], seed: int = 0,
                            gamma_spread: float = 0.5) -> Any:
    """Give an untrained model the BatchNorm statistics it would have on these images.

    Every BN gets random affine parameters (gamma ~ U(1 - spread, 1 + spread), small beta, as
    in a trained net) and running mean/variance measured by forwarding ``feeds`` in train mode
    (cumulative average, no gradients, weights untouched). This reproduces what drives the
    RepVGG PTQ problem: the identity/1x1-branch BNs divide by the per-channel std of their
    input, and fusing them puts these per-channel factors into the kernel. Returns the model
    in eval mode (train form).
    """
    import torch
    from torch import nn

    g = torch.Generator().manual_seed(seed)
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    with torch.no_grad():
        for bn in bns:
            n = bn.num_features
            bn.weight.copy_(1 + gamma_spread * (2 * torch.rand(n, generator=g) - 1))
            bn.bias.copy_(0.1 * torch.randn(n, generator=g))
            bn.reset_running_stats()
            bn.momentum = None  # cumulative moving average over the calibration batches
        model.train()
        for feed in feeds:
            model(torch.from_numpy(feed["images"]), torch.from_numpy(feed["intrinsics"]))
    for bn in bns:
        bn.momentum = 0.1
    return model.eval()


def scale_prediction_heads(model: Any, feeds: list[dict[str, np.ndarray]], log_depth_std: float = 0.6,
                           logit_std: float = 2.0) -> Any:
    """Rescale the final 1x1 prediction convs of an untrained model so that its outputs vary
    like a trained model's (log-depth std ``log_depth_std`` over the images, class-logit std
    ``logit_std``, regression std 1). Fresh heads are initialised near-constant (std 0.01),
    which would make any output-fidelity figure meaningless."""
    import torch

    with torch.no_grad():
        model.eval()
        feats: dict[str, list[torch.Tensor]] = {}
        hooks = []
        for name, mod in model.named_modules():
            if name.endswith(("cls_pred", "reg_pred")) or name == "depth_head.pred":
                hooks.append(mod.register_forward_hook(
                    lambda m, i, o, name=name: feats.setdefault(name, []).append(o.detach())))
        for feed in feeds[:2]:
            model(torch.from_numpy(feed["images"]), torch.from_numpy(feed["intrinsics"]))
        for h in hooks:
            h.remove()
        mods = dict(model.named_modules())
        for name, outs in feats.items():
            o = torch.cat([x.flatten(2) for x in outs], 2)  # [B, C, N]
            std = o.std(dim=(0, 2)).clamp_min(1e-8)
            target = log_depth_std if name == "depth_head.pred" else (logit_std if "cls" in name else 1.0)
            mods[name].weight.mul_((target / std).reshape(-1, 1, 1, 1))
    return model
