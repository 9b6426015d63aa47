"""``perception bench pipeline``: end-to-end frames/s of the whole pipeline.

What is timed: from the capture threads' decoding to the last sink (video encode, JSONL), for
synchronised frames, after a model warm-up; frames/s = frames / wall time of the run. Stage
medians come from the engine's timers (each stage measured around its ``__call__``; stages
overlap in the pipelined engine, so they do not add up to 1 / fps). The system load (1-minute
load average) is recorded before and after, since a shared machine changes the figures, and
so is the process CPU time per frame (all threads), which does not depend on the load.
"""

from __future__ import annotations

import datetime
import logging
import os
import platform
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np
import torch

from perception.nn import resolve_model
from perception.pipeline.bench_inputs import surround_rig, write_clip
from perception.pipeline.bev import BEVConfig
from perception.pipeline.runner import Pipeline, PipelineOptions, build_rig

log = logging.getLogger(__name__)

__all__ = ["BenchCase", "default_cases", "run_case", "bench_pipeline", "environment"]

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class BenchCase:
    name: str
    rig: Path
    model: str
    size: tuple[int, int]
    render: bool = True
    frames: int = 60
    loop: bool = True


def environment() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"date": datetime.datetime.now().isoformat(timespec="seconds"), "cpu": cpu, "cores": os.cpu_count(),
            "torch": torch.__version__, "opencv": cv2.__version__, "python": platform.python_version(),
            "threads": torch.get_num_threads(), "device": "cuda" if torch.cuda.is_available() else "cpu",
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def _load() -> float:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return float("nan")


def _readable(rig_path: Path) -> bool:
    try:
        rig, sources = build_rig(rig_path)
    except (OSError, ValueError):
        return False
    for src in sources:
        cap = cv2.VideoCapture(src)
        ok = cap.isOpened() and cap.read()[0]
        cap.release()
        if not ok:
            return False
    return True


def six_camera_rig(workdir: Path, frames: int = 60, rig: Path | None = None) -> Path:
    """``rig``, else the sample drive's rig when it is complete and readable, else a synthetic
    six-camera 256x448 clip written to ``workdir``."""
    if rig is not None:
        return rig
    sample = ROOT / "data" / "sample_drive" / "rig.yaml"
    if sample.is_file() and _readable(sample):
        return sample
    log.warning("data/sample_drive/ is not available: benchmarking a synthetic six-camera 256x448 clip")
    return write_clip(workdir / "six", surround_rig(6, 448, 256), frames)


def dashcam_rig(workdir: Path, video: Path | None, frames: int = 60) -> Path:
    """A one-camera rig on ``video`` (1280x720, calibrated as data/rigs/dashcam_1280x720.yaml), or on a
    synthetic 1280x720 clip when no video is given."""
    from perception.geometry import Camera, Rig
    calib = Rig.load(ROOT / "data" / "rigs" / "dashcam_1280x720.yaml").cameras[0]
    if video is None or not Path(video).is_file():
        one = Rig("dashcam", [calib])
        return write_clip(workdir / "dash", one, frames, fps=25.0)
    # absolute: the rig file lives in a temporary folder and its sources resolve relative to it
    cam = Camera(calib.name, calib.width, calib.height, calib.K, calib.dist, calib.T_ego_cam,
                 source=str(Path(video).resolve()))
    path = workdir / "dashcam.yaml"
    Rig("dashcam", [cam]).save(path)
    return path


def default_cases(workdir: Path, frames: int = 60, dashcam_video: Path | None = None,
                  six_rig: Path | None = None) -> list[BenchCase]:
    six = six_camera_rig(workdir, frames, six_rig)
    return [BenchCase("six-camera 256x448 rep-n, rendering on", six, "rep-n", (256, 448), True, frames),
            BenchCase("six-camera 256x448 rep-n, rendering off", six, "rep-n", (256, 448), False, frames),
            BenchCase("dashcam 1280x720 rep-s 384x640, rendering on", dashcam_rig(workdir, dashcam_video, frames),
                      "rep-s", (384, 640), True, frames)]


def _model_only_ms(pipe: Pipeline, iters: int = 8) -> float:
    """Median ms of one batched forward of all cameras (the backend alone)."""
    H, W = pipe.size
    B = len(pipe.rig)
    x = torch.full((B, 3, H, W), 0.5).contiguous(memory_format=torch.channels_last)
    K = torch.as_tensor(np.stack([c.scaled(W, H).K for c in pipe.rig.cameras]), dtype=torch.float32)
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        pipe.backend(x, K)
        times.append((time.perf_counter() - t0) * 1e3)
    return float(sorted(times)[len(times) // 2])


def run_case(case: BenchCase, out: Path, pipelined: bool = True, precision: str = "auto",
             threads: int | None = None) -> dict[str, Any]:
    rig, sources = build_rig(case.rig)
    model = resolve_model(case.model, random_weights=True)
    name, trained = model.source.name, model.source.trained
    opts = PipelineOptions(model=case.model, size=case.size, out=out, render=case.render, max_frames=case.frames,
                           loop=case.loop, bev=BEVConfig(), pipelined=pipelined, precision=precision,
                           threads=threads)
    load_before = _load()
    pipe = Pipeline(rig, sources, opts, model=model, model_name=name)
    pipe.warmup()  # run() warms up again (cheap); this keeps warm-up out of the CPU-time figure
    model_only_ms = _model_only_ms(pipe)
    cpu0 = time.process_time()
    summary = pipe.run()
    cpu = time.process_time() - cpu0
    pipe.close()
    return {"case": case.name, "cameras": len(rig), "camera_size": list(rig.cameras[0].size), "model": name,
            "trained_weights": trained, "network_size": list(case.size), "render": case.render,
            "precision": pipe.precision, "model_copies": pipe.model_workers, "torch_threads": pipe.threads,
            "pipelined": pipelined, "frames": summary["frames"], "fps": summary["fps"],
            "latency_ms": summary["latency_ms"], "dropped_frames": summary["dropped_frames"],
            "errors": summary["errors"], "load_before": load_before, "load_after": _load(),
            # CPU time of this process per frame (all threads): load-independent; cores / this = the
            # frames/s an otherwise idle machine could reach at best
            "cpu_ms_per_frame": round(1e3 * cpu / max(summary["frames"], 1), 1),
            # the fused network alone on the same batch, measured just before (same load): the ratio
            # fps / model_only_fps is the pipeline's efficiency and varies much less with the load
            "model_only_ms": round(model_only_ms, 1), "model_only_fps": round(1e3 / model_only_ms, 2),
            "efficiency": round(summary["fps"] * model_only_ms / 1e3, 3),
            "source": str(case.rig)}


def bench_pipeline(frames: int = 60, dashcam_video: Path | None = None, threads: int | None = None,
                   cases: list[str] | None = None, progress: Callable[[str], None] | None = None,
                   six_rig: Path | None = None, precision: str = "auto") -> dict[str, Any]:
    if threads:
        torch.set_num_threads(threads)
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp:
        work = Path(tmp)
        for k, case in enumerate(default_cases(work, frames, dashcam_video, six_rig)):
            if cases and str(k) not in cases and case.name not in cases:
                continue
            if progress:
                progress(case.name)
            results.append(run_case(case, work / f"out{k}", precision=precision, threads=threads))
    return {"env": environment(), "results": results,
            "timed": "end to end: capture/decode -> preprocess -> model -> decode -> lift -> BEV -> track -> "
                     "render -> sinks (video.mp4 + detections.jsonl), synchronised multi-camera frames, "
                     "after 2 warm-up forwards; fps = frames / wall time; stages overlap (pipelined threads)"}
