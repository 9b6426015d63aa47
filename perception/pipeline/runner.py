"""Assemble a runnable pipeline (sources, capture, stages, sinks) from options.

This is what ``perception run | demo | live`` and ``perception bench pipeline`` call:
:func:`build_rig` resolves the cameras and their sources, :class:`Pipeline` wires
capture threads -> synchroniser -> engine stages -> sinks and writes ``summary.json``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from perception.geometry import CalibrationError, Rig
from perception.nn import PerceptionNet, resolve_model
from perception.nn.registry import TRAIN_FOCAL_PX
from perception.pipeline.backends import TORCH_BACKENDS, Backend, create_backend, resolve_precision
from perception.pipeline.bev import BEVConfig
from perception.pipeline.capture import Backoff, CaptureThread, Synchronizer
from perception.pipeline.engine import (BEVFusion, Decode, Engine, Lift, ModelStage, Preprocess, SinkStage,
                                        StageGroup, Track, frames_from_synchronizer)
from perception.pipeline.lifting import GroundGate
from perception.pipeline.render import RenderConfig, Renderer
from perception.pipeline.sinks import BEVImageSink, JsonlSink, ServerSink, VideoSink, WindowSink, write_summary
from perception.pipeline.sources import Source, SourceError, open_source, source_kind

log = logging.getLogger(__name__)

__all__ = ["PipelineOptions", "Pipeline", "build_rig", "auto_size", "probe_size", "OUTPUT_FILES"]

OUTPUT_FILES = ("video.mp4", "bev.png", "detections.jsonl", "summary.json")  # what a run writes in --out


def auto_size(width: int, height: int, long_side: int = 640, fx: float | None = None,
              focal_px: float | None = TRAIN_FOCAL_PX, min_long_side: int = 320) -> tuple[int, int]:
    """Network size for a camera, both sides multiples of 32: the long side at most ``long_side``,
    and, when the camera's focal length ``fx`` (px, native size) is known, small enough that the
    resized camera's focal length is about ``focal_px`` (never below ``min_long_side``).

    Why: the shipped networks saw focal lengths near ``TRAIN_FOCAL_PX`` in training; run at a
    much longer focal length (a narrow dashcam at 640 px wide) they detect many more false and
    giant boxes and overestimate depth (docs/pipeline.md, "Input size").
    """
    s = min(1.0, long_side / max(width, height))
    if fx is not None and fx > 0 and focal_px:
        s = max(min(s, focal_px / fx), min(s, min_long_side / max(width, height)))
    return max(32, int(round(height * s / 32)) * 32), max(32, int(round(width * s / 32)) * 32)


SHARED_DATA_DEFAULT = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def build_rig(rig_path: str | Path, sources_required: bool = True) -> tuple[Rig, list[str]]:
    """A rig and its camera sources (relative paths resolved against the rig file's folder;
    ``$PERCEPTION_SHARED_DATA`` expands to the shared sample data, default ``../shared/data``
    next to the repository)."""
    rig_path = Path(rig_path)
    rig = Rig.load(rig_path)
    sources = []
    for i, cam in enumerate(rig.cameras):
        if not cam.source:
            if sources_required:
                raise CalibrationError(f"{rig_path}: cameras[{i}] '{cam.name}': missing field 'source'")
            sources.append("")
            continue
        src = str(cam.source)
        if "$PERCEPTION_SHARED_DATA" in src or "${PERCEPTION_SHARED_DATA}" in src:
            shared = os.environ.get("PERCEPTION_SHARED_DATA", str(SHARED_DATA_DEFAULT))
            src = src.replace("${PERCEPTION_SHARED_DATA}", shared).replace("$PERCEPTION_SHARED_DATA", shared)
        if source_kind(src) in ("video", "images") and not Path(src).is_absolute():
            src = str((rig_path.parent / src))
        sources.append(src)
    return rig, sources


def probe_size(spec: str) -> tuple[int, int]:
    """(width, height) of a source's first frame."""
    src = open_source(spec)
    try:
        src.open()
        ok, img, _ = src.read()
    finally:
        src.close()
    if not ok or img is None:
        raise SourceError(f"{spec}: no readable frame")
    return img.shape[1], img.shape[0]


@dataclass
class PipelineOptions:
    model: str = "rep-s"
    backend: str = "torch"
    precision: str = "auto"                       # torch backends: auto (bf16 CPU / fp16 CUDA), fp32, bf16, fp16
    device: str = "auto"
    size: tuple[int, int] | None = None           # network input (H, W); None: auto from the first camera
    out: Path | None = Path("runs/run")
    show: bool = False
    serve: int | None = None
    max_frames: int | None = None
    render: bool = True
    ground: bool = True
    bev: BEVConfig = field(default_factory=BEVConfig)
    display: RenderConfig = field(default_factory=RenderConfig)
    score_thresh: float = 0.5                     # shown/tracked detections (see docs/pipeline.md)
    ground_gate: bool = True                      # drop objects floating above the ground (lifting.GroundGate)
    sync_tolerance: float | None = None           # seconds; None: 0.4 frame periods
    live_wait: float = 0.1
    first_frame_timeout: float | None = 20.0      # s without any frame from any camera: fail, not hang
    queue_size: int = 4
    threads: int | None = None
    model_workers: int | None = None              # copies of the network stage; None: model_parallelism picks
    pipelined: bool = True
    loop: bool = False
    backoff: Backoff = field(default_factory=Backoff)
    write_outputs: bool = True


def default_torch_threads(cameras: int, device: str, cores: int | None = None) -> int:
    """Intra-op threads of one copy of the network stage (see :func:`model_parallelism`).

    On small CPUs the other stages (video decode, resize, BEV, rendering) need a core too. With one
    or two cameras the network is a smaller part of each frame, and leaving one core to the rest
    was faster on our 2-core machines (dashcam, shipped rep-s at 384x640: 12.6 vs 11.4 frames/s);
    with more cameras the network dominates and every core should run it (six cameras, rep-n:
    10.0 with 2 threads vs 8.1 with 1). Machines with more than 4 cores keep torch's default.
    """
    cores = cores or os.cpu_count() or 1
    if device.startswith("cuda") or cores > 4:
        return torch.get_num_threads()
    return max(1, cores - 1) if cameras <= 2 else cores


def model_parallelism(cameras: int, device: str, backend: str, *, threads: int | None = None,
                      workers: int | None = None, cores: int | None = None) -> tuple[int, int]:
    """``(copies, torch threads per copy)`` of the network stage; ``threads`` and ``workers``
    are the user's choices (None: pick).

    On a small CPU eager torch gets the most frames through as one copy per core, each with one
    torch thread, working on different frames: a thread team of two waits at every operator's
    barrier whenever the stages around the network take a core, one thread per copy never does.
    2-core AMD EPYC VM, shipped rep-s (docs/benchmarks.md section 2): six cameras 8.1-9.6
    frames/s end to end with two copies against 4.9-7.4 with one copy on two threads; the
    dashcam 36.5-37.8 against 28.5-33.1 with one single-thread copy. The cost is latency (each
    frame's network runs on one core: +35 ms on the dashcam). GPUs, the other backends and
    machines with more than 4 cores keep one copy. ``threads`` alone keeps one copy with that
    many threads; ``cameras`` matters only to one copy (:func:`default_torch_threads`)."""
    cores = cores or os.cpu_count() or 1
    if workers is None:
        small_cpu = not device.startswith("cuda") and backend == "torch" and cores <= 4
        workers = cores if small_cpu and threads is None else 1
    if threads is None:
        return workers, 1 if workers > 1 else default_torch_threads(cameras, device, cores)
    return workers, max(1, threads // workers)


class Pipeline:
    """Everything wired up. ``run()`` blocks until the sources end, ``max_frames`` or
    :meth:`stop`; outputs are always finalised (also on Ctrl-C / SIGTERM via :meth:`stop`)."""

    def __init__(self, rig: Rig, sources: list[str | Source], opts: PipelineOptions,
                 model: PerceptionNet | None = None, model_name: str | None = None) -> None:
        if len(sources) != len(rig):
            raise ValueError(f"{len(sources)} sources for {len(rig)} cameras")
        self.rig, self.opts = rig, opts
        device = opts.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError("--device cuda requested but CUDA is not available")
        self.device = device
        self.model_workers, self.threads = model_parallelism(len(rig), device, opts.backend, threads=opts.threads,
                                                             workers=opts.model_workers)
        torch.set_num_threads(self.threads)
        if model is None:  # a name without shipped weights runs with random weights and a warning
            model = resolve_model(opts.model, random_weights=True)
            model_name = model.source.name
        self.model_name = model_name or opts.model
        kwargs = {}
        if opts.backend in TORCH_BACKENDS:
            kwargs["dtype"] = self.precision = resolve_precision(opts.precision, device)
        else:
            self.precision = "fp32"
        self.backend: Backend = create_backend(opts.backend, model, device, **kwargs)
        cfg = model.cfg
        cam0 = rig.cameras[0]
        if opts.size is not None:
            self.size = opts.size
        else:
            fx = float(cam0.K[0, 0])
            self.size = auto_size(cam0.width, cam0.height, fx=fx)
            log.info("network input %dx%d (camera %dx%d, fx %.0f px -> %.0f px; --size overrides)", *self.size,
                     cam0.height, cam0.width, fx, fx * self.size[1] / cam0.width)
        self.srcs = [s if isinstance(s, Source) else open_source(s, rig.cameras[i].name, loop=opts.loop)
                     for i, s in enumerate(sources)]
        for s, cam in zip(self.srcs, rig.cameras):
            s.name = cam.name
        self.captures = [CaptureThread(i, s, queue_size=opts.queue_size, backoff=opts.backoff)
                         for i, s in enumerate(self.srcs)]
        tol = opts.sync_tolerance
        self.sync = Synchronizer(self.captures, tolerance=tol if tol is not None else 0.04, wait=opts.live_wait,
                                 first_frame_timeout=opts.first_frame_timeout)
        self._tol_auto = tol is None

        self.preprocess = Preprocess(rig, self.size, device)
        self.decode = Decode(cfg.classes, cfg.f_ref, score_thresh=opts.score_thresh, strides=cfg.det_strides)
        self.bev = BEVFusion(rig, opts.bev, ground=opts.ground)
        self.sinks: list[Any] = []
        self.server = None
        out = Path(opts.out) if opts.out is not None else None
        self.out = out
        self.video_sink = None
        if opts.serve is not None:  # first: a busy port must fail before any output file exists
            from perception.pipeline.server import MJPEGServer
            self.server = MJPEGServer(opts.serve)
        if opts.write_outputs and out is not None:
            out.mkdir(parents=True, exist_ok=True)
            stale = [out / n for n in OUTPUT_FILES if (out / n).exists()]
            if stale:  # never list an earlier run's files as this run's
                log.warning("%s: replacing the outputs of an earlier run (%s)", out, ", ".join(p.name for p in stale))
                for p in stale:
                    p.unlink()
            if opts.render:
                self.video_sink = VideoSink(out / "video.mp4", 10.0)
                self.sinks += [self.video_sink, BEVImageSink(out / "bev.png")]
            self.sinks.append(JsonlSink(out / "detections.jsonl"))
        if opts.show:
            self.sinks.append(WindowSink("perception", on_quit=self.stop))
        if self.server is not None:
            self.sinks.append(ServerSink(self.server, self.stats))
        self.renderer = Renderer(rig.names, cam0.size, opts.display) if opts.render else None
        self.lift = Lift(ground_gate=GroundGate() if opts.ground_gate else None)
        log.info("model stage: backend %s, precision %s, device %s, %d cop%s of the network with %d torch thread%s "
                 "each", opts.backend, self.precision, device, self.model_workers,
                 "y" if self.model_workers == 1 else "ies", self.threads, "" if self.threads == 1 else "s")
        network = StageGroup([self.preprocess, ModelStage(self.backend)], workers=self.model_workers,
                             on_start=lambda: torch.set_num_threads(self.threads))
        groups = [network, [self.decode, self.lift, self.bev, Track()]]
        last = ([self.renderer] if self.renderer else []) + ([SinkStage(self.sinks)] if self.sinks else [])
        groups.append(last)
        self.sink_stage = SinkStage(self.sinks)
        self.engine = Engine(frames_from_synchronizer(self.sync, rig.names), groups, pipelined=opts.pipelined)
        self._stopped = threading.Event()
        self.interrupted = False                  # set by a signal handler: recorded in summary.json
        self.summary: dict[str, Any] = {}

    # ------------------------------------------------------------------ control
    def stop(self) -> None:
        """Clean stop (safe from a signal handler): stop capturing, finish frames in flight."""
        self._stopped.set()
        self.engine.stop()
        self.sync.stop()

    def stats(self) -> dict[str, Any]:
        s = self.engine.live_stats()
        s.update(dropped_frames=self.dropped_frames(), errors=dict(self.errors()), model=self.model_name,
                 backend=self.backend.name, precision=self.precision, device=self.device,
                 cameras={c.source.name: c.state for c in self.captures})
        return s

    def dropped_frames(self) -> int:
        return int(self.sync.dropped + self.sync.queue_dropped)

    def errors(self) -> dict[str, int]:
        errs: dict[str, int] = dict(self.engine.errors)
        for c in self.captures:
            for k, v in c.all_errors().items():
                errs[k] = errs.get(k, 0) + v
        missing = sum(self.sync.missing.values())
        if missing:
            errs["missing_camera"] = missing
        return errs

    def warmup(self) -> None:
        H, W = self.size
        self.backend.warmup(len(self.rig), H, W, iters=2)

    def run(self, progress: Callable[[int], None] | None = None) -> dict[str, Any]:
        """Run to the end; returns (and writes) the summary."""
        self.warmup()
        self.sync.start()
        # tolerance from the sources' frame rate once they are open
        if self._tol_auto:
            t0 = time.monotonic()
            while any(c.state == "starting" for c in self.captures) and time.monotonic() - t0 < 5:
                time.sleep(0.01)
            fps = max([c.source.fps for c in self.captures if c.source.fps > 0] or [10.0])
            self.sync.tolerance = 0.4 / fps
        if self.video_sink is not None:
            fps0 = self.captures[0].source.fps
            self.video_sink.fps = fps0 if 0 < fps0 < 120 else 10.0
        if progress is not None:
            self.engine.on_frame = lambda f: progress(f.index)
        failed = [c for c in self.captures if c.state == "failed"]
        if failed and len(failed) == len(self.captures):
            self.sync.stop()
            self._finalise()
            raise SourceError("; ".join(c.error_message for c in failed))
        try:
            self.engine.run(self.opts.max_frames)
        finally:
            self.sync.stop()
            self.sync.join(2.0)
            self._finalise()
        if isinstance(self.engine.fatal, OSError):  # an output could not be written: say so, exit non-zero
            raise self.engine.fatal
        if self.sync.timed_out:
            why = "; ".join(c.error_message for c in self.captures if c.error_message) or "no frame"
            raise SourceError(f"no camera delivered a frame within {self.opts.first_frame_timeout:.0f} s ({why})")
        return self.summary

    def _finalise(self) -> None:
        lat = self.engine.timer.medians()
        self.summary = {
            "frames": self.engine.frames,
            "fps": round(self.engine.fps, 3),
            "latency_ms": lat,
            "dropped_frames": self.dropped_frames(),
            "errors": self.errors(),
            "model": self.model_name,
            "backend": self.backend.name,
            "device": self.device,
            "interrupted": bool(self.interrupted),
        }  # the keys of DESIGN.md section 6, plus whether a signal stopped the run
        if self.lift.floating_dropped:
            log.info("ground gate: dropped %d detection(s) floating above the ground (--no-ground-gate keeps them)",
                     self.lift.floating_dropped)
        self.sink_stage.close(self.summary)
        if self.opts.write_outputs and self.out is not None:
            write_summary(self.out / "summary.json", self.summary)
        if self.server is not None:
            self.server.update(None, dict(self.summary, finished=True))

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None
