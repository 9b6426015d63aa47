"""Knowledge distillation as a compression method: a distilled student against the same student
trained identically without the teacher, on the proxy task (or real data), in ``report.json``.

The loss itself (:class:`DistillationLoss`: soft class targets, attention transfer on the neck
outputs, L1 on log depth) belongs to training and lives in :mod:`perception.train.distill`; the
proxy runs plug it into :func:`perception.compress.common.fit` with ``Hooks(wrap_criterion=...)``.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

from perception.compress.common import FitConfig, Hooks, ProxyData, describe, evaluate, fit, fused, write_report
from perception.nn.checkpoint import save_checkpoint
from perception.nn.model import PerceptionNet
from perception.train.distill import DistillationLoss, DistillConfig, distill_wrapper

__all__ = ["DistillConfig", "DistillationLoss", "distill_wrapper", "run_distill"]

log = logging.getLogger(__name__)


def run_distill(make_student: Callable[[int], PerceptionNet], teacher: PerceptionNet, data: ProxyData,
                fit_cfg: FitConfig, cfg: DistillConfig, out: Path,
                baseline: PerceptionNet | None = None) -> dict[str, Any]:
    """Student with distillation vs the same student trained identically without it."""
    teacher_row = {**evaluate(teacher, data), **describe(fused(teacher), data.size)}
    if baseline is None:
        baseline = fit(make_student(fit_cfg.seed), data, fit_cfg)
    student = fit(make_student(fit_cfg.seed), data, fit_cfg, Hooks(wrap_criterion=distill_wrapper(teacher, cfg)))
    path = save_checkpoint(student, out / "student.safetensors")
    report = {"config": asdict(cfg), "fit": asdict(fit_cfg), "data": data.description, "teacher": teacher_row,
              "student_without_distillation": {**evaluate(baseline, data), **describe(fused(baseline), data.size)},
              "student_distilled": {**evaluate(student, data), **describe(fused(student), data.size)},
              "file": str(path), "file_bytes": path.stat().st_size}
    write_report(out, "distill", report)
    return report
