"""The datasets an evaluation runs over (:func:`open_dataset`): ``synth`` (rendered from ``seed``;
training uses seeds 500-9999, so the default evaluation seed 90000 never overlaps), ``nuscenes``
and ``kitti`` (``--data`` folder, read by :mod:`perception.data.readers`) and ``video`` (no ground
truth: qualitative output and prediction statistics only).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from perception.data.sample import Sample
from perception.eval.options import DEFAULT_SEED, TRAINING_SEEDS, EvalError, EvalOptions

log = logging.getLogger(__name__)

__all__ = ["open_dataset", "DATASETS", "DEFAULT_SEED", "TRAINING_SEEDS"]

DATASETS = ("synth", "kitti", "nuscenes", "video")


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
        samples = SynthDataset(opts.rig, seed=opts.seed, frames=n, size=opts.size, fps=2.0, episode_frames=10)
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
