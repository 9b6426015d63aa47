"""``perception adapt``: fine-tune a model to a user's own camera from unlabelled footage.

Steps (each resumable; ``OUT`` is the output folder):

1. **Camera and size**: the calibration policy of ``perception run``
   (:func:`perception.geometry.camera_for_source`) and the input size ``run`` would choose for it.
2. **Footage** (``OUT/footage``, :mod:`perception.adapt.footage`): one streamed pass over the
   source writes training frames with the COCO teacher's boxes, frame triplets for
   self-supervised depth and held-out frames (whole time blocks).
3. **Synthetic replay** (``OUT/synth``): the synthetic world rendered *through the
   user's camera* (its intrinsics and mount). Real frames carry only 2D pseudo-labels; the replay
   keeps the 3D box heads and metric depth supervised, so they do not drift while the rest adapts.
4. **Fine-tuning** (``OUT/train``, :func:`perception.train.train`): teacher boxes on real frames +
   replay labels + self-supervised depth on the triplets, scaled by the calibrated camera height;
   checkpoints every few minutes, exact resume.
5. **Model and report**: ``OUT/model.safetensors`` (fp16 train form, what ``run --model`` loads)
   and ``OUT/report.md`` / ``report.json``, the before/after figures on the held-out frames
   (:mod:`perception.adapt.report`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from perception.adapt.footage import Footage, prepare_footage
from perception.adapt.report import measure, write_report
from perception.geometry.camera import Rig
from perception.geometry.source_camera import camera_for_source
from perception.nn import ModelLoadError, load_checkpoint, registry, resolve_model, save_checkpoint
from perception.nn.resolve import shipped_checkpoint
from perception.pipeline.runner import auto_size
from perception.train import TrainConfig, train
from perception.train.data import AugmentConfig
from perception.train.losses import LossWeights
from perception.train.sources import SHARED_DATA, render_synth

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int, str], None]   # (stage, done, total, info)


@dataclass
class AdaptOptions:
    """What ``perception adapt`` takes; defaults are the documented recipe (docs/adapt.md)."""

    source: str
    out: Path
    model: str = "rep-s"
    calib: str | None = None
    size: tuple[int, int] | None = None        # None: the size `perception run` chooses for the camera
    steps: int = 1200
    batch: int = 8
    lr: float = 1e-4
    max_frames: int = 2000                      # training frames taken from the footage, spread over it
    max_heldout: int = 300
    holdout: float = 0.2                        # fraction of the footage (whole time blocks) held out
    synth_frames: int = 600                     # synthetic replay frames through the user's camera; 0: none
    blur_consistency: float = 0.0               # weight of loss.blur_consistency on the real frames; 0: off
    teacher: str = str(SHARED_DATA / "weights" / "yolox_nano.onnx")
    seed: int = 0
    amp: str = "bf16"
    workers: int = 1
    ckpt_minutes: float = 5.0
    device: str = "auto"


@dataclass
class AdaptResult:
    out: Path
    model_path: Path
    report_md: Path
    report: dict[str, Any]
    run_command: str


def _model_and_init(spec: str) -> tuple[str, str]:
    """(registered model name, train-form checkpoint to start from) of a ``--model`` spec."""
    if spec in registry.list_models():
        try:
            return spec, str(shipped_checkpoint(spec))
        except FileNotFoundError as exc:
            raise ModelLoadError(spec, str(exc)) from None
    path = Path(spec)
    if not path.is_file():
        raise ModelLoadError(spec, f"neither a registered model ({', '.join(registry.list_models())}) nor a file")
    net = load_checkpoint(path)
    if net.is_reparameterized:
        raise ModelLoadError(spec, "is a fused (deploy-form) checkpoint; adaptation trains the train form")
    if net.cfg.name not in registry.list_models():
        raise ModelLoadError(spec, f"its model {net.cfg.name!r} is not a registered model")
    return net.cfg.name, str(path)


def train_config(opts: AdaptOptions, name: str, init: str, footage: Footage, synth_dir: Path | None,
                 size: tuple[int, int]) -> TrainConfig:
    """The fine-tuning run: real frames listed about as often as the replay frames per epoch."""
    data = [str(footage.train_dir)]
    if synth_dir is not None:
        data = data * max(1, round(opts.synth_frames / max(footage.train_frames, 1))) + [str(synth_dir)]
    data.append(f"video:{footage.triplet_dir}")
    return TrainConfig(model=name, init=init, out=str(opts.out / "train"), data=data, size=size, batch=opts.batch,
                       steps=opts.steps, lr=opts.lr, warmup_steps=min(50, max(1, opts.steps // 10)), ema_decay=0.999,
                       amp=opts.amp, seed=opts.seed, workers=opts.workers, ckpt_minutes=opts.ckpt_minutes,
                       log_every=max(1, min(10, opts.steps)), device=opts.device, selfsup_batch=2,
                       # fine texture on the smooth rendered replay, as in rep-s stage 10: without it
                       # the replay teaches "fine detail = far away" again (docs/training.md)
                       augment=AugmentConfig(scale=(0.8, 1.5), detail=0.5),
                       # real frames' depth pulled towards the EMA's depth of them blurred (train/consistency.py)
                       loss=LossWeights(blur_consistency=opts.blur_consistency))


def adapt(opts: AdaptOptions, resume: bool = False, progress: Progress | None = None,
          stop_after: int | None = None) -> AdaptResult | None:
    """Run (or resume) an adaptation; returns None when ``stop_after`` ended training early."""
    out = opts.out
    ckpt = out / "train" / "last.ckpt"
    if ckpt.is_file() and not resume:
        raise ValueError(f"{out} already holds an adaptation run ({ckpt}); pass --resume to continue it, "
                         "or choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    if not Path(opts.teacher).is_file():
        raise FileNotFoundError(f"{opts.teacher}: teacher ONNX file not found (--teacher; the shared data has "
                                "weights/yolox_nano.onnx)")
    name, init = _model_and_init(opts.model)
    camera = camera_for_source(opts.source, opts.calib)
    size = tuple(opts.size) if opts.size else auto_size(camera.width, camera.height, fx=camera.fx)
    log.info("adapting %s to %s: camera %dx%d fx %.0f, %.2f m high; network input %dx%d", opts.model, opts.source,
             camera.width, camera.height, camera.fx, camera.T_ego_cam[2, 3], size[0], size[1])

    def step(stage: str) -> Callable[[int, int], None] | None:
        """The (done, total) progress callback of one stage, for the functions that take one."""
        return (lambda done, total: progress(stage, done, total, "")) if progress else None

    footage = prepare_footage(opts.source, camera, out / "footage", size, opts.teacher, max_frames=opts.max_frames,
                              max_heldout=opts.max_heldout, holdout=opts.holdout, progress=step("read footage"))
    synth_dir = None
    if opts.synth_frames > 0:
        rig_path = out / "synth" / "rig.yaml"
        Rig("adapt", [camera.pinhole() if camera.has_distortion else camera]).save(rig_path)
        spec = f"synth:{rig_path},frames={opts.synth_frames},seed={70000 + opts.seed},episode_frames=4,fps=2,barriers=0.5"
        synth_dir = render_synth(spec, size, cache_root=out / "synth", progress=step("render replay"))

    cfg = train_config(opts, name, init, footage, synth_dir, size)

    def on_log(row: dict) -> None:
        if progress:
            progress("fine-tune", int(row["step"]), cfg.steps,
                     f"loss {row['loss']:.3f} depth(self-sup) {row.get('selfsup', 0):.3f}")

    steps_done_before = _checkpoint_step(ckpt)
    if steps_done_before < cfg.steps:
        train(cfg, resume=ckpt.is_file(), progress=on_log, stop_after=stop_after)
        if _checkpoint_step(ckpt) < cfg.steps:
            return None
    adapted = load_checkpoint(out / "train" / f"{name}.safetensors")
    model_path = save_checkpoint(adapted, out / "model.safetensors", half=True,
                                 extra={"adapted_from": str(opts.model), "adapted_to": str(opts.source),
                                        "steps": str(cfg.steps)})
    Rig("camera", [camera]).save(out / "camera.yaml")
    run_command = (f"perception run --source {opts.source} --calib {out / 'camera.yaml'} "
                   f"--model {model_path} --size {size[0]}x{size[1]}")

    before_model = resolve_model(opts.model)
    after_model = resolve_model(model_path)
    calib = footage.root / "camera.yaml"
    before = measure(before_model, footage.heldout_dir, calib, camera, size, opts.teacher, step("report: before"))
    after = measure(after_model, footage.heldout_dir, calib, camera, size, opts.teacher, step("report: after"))
    info = {"model": opts.model, "source": opts.source, "size": list(size), "teacher": opts.teacher,
            "camera": camera.to_dict(), "footage": {"train_frames": footage.train_frames, "triplets": footage.triplets,
                                                    "heldout_frames": footage.heldout_frames, "plan": footage.plan},
            "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(opts).items()},
            "run_command": run_command}
    _, md = write_report(before, after, out, info)
    return AdaptResult(out, model_path, md, {"before": before, "after": after, "info": info}, run_command)


def _checkpoint_step(ckpt: Path) -> int:
    """The step at which the run in ``ckpt``'s folder last saved (0 without a checkpoint), from the
    model file written with it (reading ``last.ckpt`` itself would load the optimizer state)."""
    from perception.nn.checkpoint import read_metadata

    if not ckpt.is_file():
        return 0
    files = [p for p in ckpt.parent.glob("*.safetensors")]
    steps = [int(read_metadata(p).get("step", 0)) for p in files]
    return max(steps, default=0)


__all__ = ["AdaptOptions", "AdaptResult", "adapt", "train_config"]
