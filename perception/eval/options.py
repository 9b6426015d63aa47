"""The options of an evaluation and its error, shared by :mod:`.runner`, :mod:`.predictors` and
:mod:`.datasets`, which all import this module (it imports none of them).

``synth`` evaluation renders from ``seed``; training uses seeds 500-9999 (:data:`TRAINING_SEEDS`),
so the default evaluation seed :data:`DEFAULT_SEED` never overlaps.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["EvalError", "EvalOptions", "DEFAULT_SEED", "TRAINING_SEEDS"]

DEFAULT_SEED = 90000
TRAINING_SEEDS = range(500, 10000)


class EvalError(ValueError):
    """Bad evaluation input (dataset, model, backend); the CLI prints it as a one-line error."""


@dataclass
class EvalOptions:
    dataset: str = "synth"
    data: str | Path | None = None
    seed: int = DEFAULT_SEED
    frames: int | None = None            # None: synth 20, other datasets all frames
    size: tuple[int, int] | None = (256, 448)  # network input (H, W); None: datasets.choose_size
    score_thresh: float = 0.05
    iou_thresh: float = 0.6
    max_det: int = 100
    rig: str = "surround6"               # synth rig (built-in name or YAML)
    calib: str | Path | None = None      # video: camera / rig YAML (else geometry.camera_for_source's policy)
    qualitative: int = 6                 # camera images kept for the report
    merge_dist: float = 1.5              # m, cross-camera de-duplication of BEV objects
    min_visible_in_crop: float = 0.5     # GT boxes less inside the evaluated crop are ignored
    teacher: str | Path | None = None    # reference detector (YOLOX ONNX) for car-finding agreement
    teacher_score: float = 0.5           # reference cars: score >= this ...
    teacher_min_height: float = 40.0     # ... and at least this tall (original pixels)
    agree_score: float = 0.3             # our car boxes counted at score >= this
    teacher_tiles: bool = False          # reference = the teacher on the image and 2x2 tiles (sees
                                         # distant cars the 416-px whole-image pass misses)
    ground_gate: bool = True             # drop what `perception run` drops: detections that lift to no
                                         # distance or float above the ground (pipeline.lifting.shown_mask)
