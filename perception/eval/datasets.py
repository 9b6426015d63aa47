"""The datasets an evaluation runs over (:func:`open_dataset`): ``synth`` (rendered from ``seed``;
training uses seeds 500-9999, so the default evaluation seed 90000 never overlaps), ``nuscenes``
and ``kitti`` (``--data`` folder, read by :mod:`perception.data.readers`) and ``video`` (no ground
truth: qualitative output and prediction statistics only).

The network input size (:func:`choose_size`): ``synth`` 256x448, the size it renders; on real data
the one ``perception run`` picks for the first camera, unless the options name one.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Sequence

from perception.data.sample import Sample
from perception.eval.options import DEFAULT_SEED, TRAINING_SEEDS, EvalError, EvalOptions

if TYPE_CHECKING:
    from perception.geometry import Camera

log = logging.getLogger(__name__)

__all__ = ["open_dataset", "choose_size", "resolve_size", "DATASETS", "DEFAULT_SEED", "TRAINING_SEEDS", "SYNTH_SIZE"]

DATASETS = ("synth", "kitti", "nuscenes", "video")
SYNTH_SIZE = (256, 448)  # synth frames are rendered at the network size


def choose_size(opts: EvalOptions, first_camera: Camera | None) -> tuple[int, int]:
    """Network input (H, W): ``opts.size`` when given; for ``synth`` (or without a camera)
    :data:`SYNTH_SIZE`; else :func:`perception.pipeline.runner.auto_size` of the first camera at
    its native size, as ``perception run`` chooses it."""
    if opts.size is not None:
        return tuple(opts.size)
    if opts.dataset == "synth" or first_camera is None:
        return SYNTH_SIZE
    from perception.pipeline.runner import auto_size

    return auto_size(first_camera.width, first_camera.height, fx=float(first_camera.K[0, 0]))


def resolve_size(opts: EvalOptions, samples: Iterable[Sample]) -> tuple[EvalOptions, Iterable[Sample]]:
    """``opts`` with the size of :func:`choose_size` (logged) for the first sample's first camera,
    and ``samples`` from the start again (the first one is read once)."""
    if opts.size is not None:
        return opts, samples
    first = None
    if opts.dataset != "synth":
        it = iter(samples)
        first = next(it, None)
        if first is not None:
            samples = itertools.chain([first], it)
    cam = first.cameras[0] if first is not None else None
    size = choose_size(opts, cam)
    if cam is not None:
        log.info("network input %dx%d (camera %s %dx%d, fx %.0f px -> %.0f px; --size overrides)", *size, cam.name,
                 cam.width, cam.height, cam.K[0, 0], cam.K[0, 0] * size[1] / cam.width)
    else:
        log.info("network input %dx%d", *size)
    return dataclasses.replace(opts, size=size), samples


def open_dataset(opts: EvalOptions) -> tuple[Sequence[Sample] | Iterable[Sample], int, bool]:
    """(samples, number of frames, depth ground truth is dense) for the options."""
    ds = opts.dataset
    if ds not in DATASETS:
        raise EvalError(f"unknown dataset {ds!r}; choose one of {', '.join(DATASETS)}")
    if opts.frames is not None and opts.frames < 1:
        raise EvalError(f"--frames must be at least 1, got {opts.frames}")
    if ds == "synth":
        from perception.data.synth import SynthDataset
        from perception.data.synth.dataset import BUILTIN_RIGS

        if opts.seed in TRAINING_SEEDS:
            log.warning("seed %d is in the training range %d-%d: this is not a held-out evaluation",
                        opts.seed, TRAINING_SEEDS.start, TRAINING_SEEDS.stop - 1)
        if opts.rig not in BUILTIN_RIGS and not Path(opts.rig).is_file():
            raise EvalError(f"synth rig {opts.rig!r} is neither a built-in rig ({', '.join(BUILTIN_RIGS)}) nor a file")
        n = opts.frames or 20
        samples = SynthDataset(opts.rig, seed=opts.seed, frames=n, size=choose_size(opts, None), fps=2.0,
                               episode_frames=10)
        return samples, n, True
    if opts.data is None:
        raise EvalError(f"--data is required for --dataset {ds} (a {ds} folder or file)")
    data = Path(opts.data)
    if not data.exists():
        raise EvalError(f"{data}: no such file or folder")
    from perception.data.readers import DataError, KittiReader, VideoReader, open_nuscenes
    from perception.geometry import CalibrationError, camera_for_source

    try:
        if ds == "nuscenes":
            reader: Any = open_nuscenes(data)
        elif ds == "kitti":
            reader = KittiReader(data)
        else:
            if opts.calib is not None and not Path(opts.calib).is_file():
                raise EvalError(f"--calib {opts.calib}: no such file")
            calib = camera_for_source(data, opts.calib, auto_mount=True)  # the policy of perception run
            reader = VideoReader(data, calib, max_frames=opts.frames)
    except (DataError, CalibrationError, ValueError) as exc:
        raise EvalError(str(exc)) from None
    n = len(reader) if opts.frames is None else min(len(reader), opts.frames)
    return _limited(reader, n), n, False


def _limited(reader: Iterable[Sample], n: int) -> Iterator[Sample]:
    for i, s in enumerate(reader):
        if i >= n:
            return
        yield s
