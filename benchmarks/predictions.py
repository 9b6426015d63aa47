"""The model-over-a-dataset loop shared by the analysis scripts in this folder.

    from predictions import iter_predictions      # scripts run as `python benchmarks/<script>.py`
"""
from __future__ import annotations

from typing import Callable, Iterator

import numpy as np
import torch

import perception.compress  # noqa: F401  (registers the compressed model formats)
from perception.eval.datasets import open_dataset
from perception.eval.predictors import TorchPredictor
from perception.eval.runner import EvalOptions, preprocess
from perception.nn import resolve_model


def iter_predictions(model_spec: str, opts: EvalOptions, score_thresh: float = 0.3,
                     image_filter: Callable[[np.ndarray], np.ndarray] | None = None) -> Iterator[tuple]:
    """``(sample, views, prediction, depth)`` per frame: the preprocessed camera views
    (:func:`perception.eval.runner.preprocess`), the model's :class:`Prediction` for their batch and
    its depth as a ``[cameras, H, W]`` numpy array. Stops after ``opts.frames`` frames if given.
    ``image_filter`` (uint8 HxWx3 -> same) changes each network input before the model sees it."""
    model = resolve_model(model_spec)
    pred = TorchPredictor(model, score_thresh=score_thresh)
    samples, _, dense = open_dataset(opts)
    for k, s in enumerate(samples):
        if opts.frames and k >= opts.frames:
            break
        views = [preprocess(s, c, opts.size, dense) for c in range(len(s.cameras))]
        inputs = [v.image if image_filter is None else image_filter(v.image) for v in views]
        images = torch.from_numpy(np.stack(inputs)).permute(0, 3, 1, 2).float().div_(255.0)
        K = torch.from_numpy(np.stack([v.camera.K for v in views])).float()
        out = pred(images, K)
        yield s, views, out, out.depth.reshape(len(views), *opts.size).numpy()
