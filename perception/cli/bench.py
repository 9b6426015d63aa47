"""`perception bench model|pipeline`: honest speed, memory and FLOP figures."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from perception.cli.app import bench_app, console, fail


def _mb(nbytes: float) -> str:
    return f"{nbytes / 2**20:.1f}"


@bench_app.command("model", help="Train vs fused form of a model: latency, frames/s, memory, FLOPs, GFLOP/s; "
                   "with --backends: the fused model in torch eager / torch.compile / ONNX Runtime fp32 / INT8.")
def bench_model_command(
    model: str = typer.Option("rep-s", "--model", "-m", help="Registered model name (see list_models())."),
    batch: int = typer.Option(6, help="Images per forward (cameras x time)."),
    size: str = typer.Option("256x448", help="Input size HxW."),
    device: str = typer.Option("cpu", help="cpu or cuda."),
    dtype: str = typer.Option("fp32", help="fp32, fp16 (cuda) or bf16."),
    iters: int = typer.Option(20, help="Timed forwards per form (after warm-up)."),
    warmup: int = typer.Option(3, help="Untimed warm-up forwards per form."),
    channels_last: bool = typer.Option(True, help="NHWC memory format (faster with oneDNN and cuDNN)."),
    compare: str = typer.Option("", help="Peers in the same run: builtin:repvgg-a0 (RepVGG-A0 backbone, fused), timm:NAME (needs timm)."),
    backends: str = typer.Option("", help="Compare backends instead of forms (fused model, CPU): comma-separated "
                                 "subset of torch,compile,onnx,onnx-int8."),
    batches: str = typer.Option("", help="With --backends: batch sizes, e.g. 1,6 (default: --batch)."),
    threads: int = typer.Option(0, help="torch (and ONNX Runtime) threads (default: torch's choice; "
                                "with --backends: all cores)."),
    memory: bool = typer.Option(True, help="With --backends: peak RSS of each backend in a fresh process."),
    out: Path = typer.Option(None, help="JSON output path (default runs/bench/model-<name>-<device>-<dtype>.json, "
                             "with --backends runs/bench/backends-<name>.json)."),
) -> None:
    from perception.deploy.bench import BenchSettings, bench_model
    from perception.geometry.resize import parse_size
    from perception.nn import list_models

    if model not in list_models():
        fail(f"unknown model {model!r}; registered: {', '.join(list_models())}")
    if threads < 0:
        fail("--threads must be >= 0")
    if backends:
        _bench_backends(model, backends, batches or str(batch), size, device, dtype, iters, warmup, threads,
                        memory, compare, out)
        return
    if threads:
        import torch

        torch.set_num_threads(threads)
    if dtype not in ("fp32", "fp16", "bf16"):
        fail(f"--dtype must be fp32, fp16 or bf16, got {dtype!r}")
    if batch < 1 or iters < 1 or warmup < 0:
        fail("--batch and --iters must be >= 1 and --warmup >= 0")
    try:
        h, w = parse_size(size)
        settings = BenchSettings(batch=batch, height=h, width=w, device=device, dtype=dtype, warmup=warmup,
                                 iters=iters, rounds=min(4, iters), channels_last=channels_last)
        with console.status("benchmarking") as status:
            result = bench_model(model, settings, [c for c in compare.split(",") if c],
                                 progress=lambda msg: status.update(f"[bold]{model}[/]: {msg}"))
    except ValueError as exc:
        fail(str(exc))
    _save(result, out or Path("runs/bench") / f"model-{model}-{device}-{dtype}.json")

    env = result["env"]
    table = Table(title=f"{model}  batch {batch} x 3 x {h} x {w}  {dtype}  {env['device']} ({env['cpu']}, "
                        f"{env['threads']} threads)  torch {env['torch']}")
    for col in ("form", "median ms", "p90 ms", "frames/s", "peak act. MB", "params M", "GFLOP/frame",
                "GFLOP/s", "% of peak"):
        table.add_column(col, justify="right" if col != "form" else "left")
    for name, r in result["results"].items():
        table.add_row(name, f"{r['median_ms']:.1f}", f"{r['p90_ms']:.1f}", f"{r['fps']:.1f}",
                      _mb(r["peak_activation_bytes"]), f"{r['params'] / 1e6:.2f}", f"{r['gflops_per_frame']:.2f}",
                      f"{r['achieved_gflops']:.0f}", f"{100 * r['fraction_of_peak']:.0f}%")
    typer.echo("")
    console.print(table)
    ratios = result["ratios"]
    console.print(f"matmul peak measured now: {result['matmul_peak_gflops']:.0f} GFLOP/s ({dtype})   "
                  f"fused/train: frames/s x{ratios['fps_fused_over_train']:.2f}, "
                  f"peak memory x{ratios['memory_fused_over_train']:.2f}")
    console.print(f"timed: {result['timed']}")
    console.print(f"saved {out}")


def _bench_backends(model: str, backends: str, batches: str, size: str, device: str, dtype: str, iters: int,
                    warmup: int, threads: int, memory: bool, compare: str, out: Path | None) -> None:
    """``bench model --backends``: the fused model in each backend (perception.deploy.backend_bench)."""
    from perception.deploy.backend_bench import BACKENDS, bench_backends
    from perception.geometry.resize import parse_size

    names = [b.strip() for b in backends.split(",") if b.strip()]
    bad = [b for b in names if b not in BACKENDS]
    if bad or not names:
        fail(f"unknown backend(s) {', '.join(bad) or repr(backends)}; --backends takes a comma-separated subset of "
             f"{','.join(BACKENDS)}")
    try:
        batch_list = [int(b) for b in batches.split(",") if b.strip()]
    except ValueError:
        fail(f"--batches must look like 1,6, got {batches!r}")
    if not batch_list or min(batch_list) < 1 or iters < 1 or warmup < 0:
        fail("--batches and --iters must be >= 1 and --warmup >= 0")
    if device != "cpu" or dtype != "fp32":
        fail("--backends measures CPU backends in fp32 (and INT8 with onnx-int8); drop --device/--dtype")
    if compare:
        fail("--compare works with the train/fused comparison only, not with --backends")
    if any(b.startswith("onnx") for b in names):
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            fail("the onnx backends need onnxruntime (pip install onnxruntime onnx)")
    try:
        hw = parse_size(size)
        with console.status("benchmarking backends") as status:
            result = bench_backends(model, hw, batch_list, names, iters=iters, warmup=warmup, threads=threads,
                                    memory=memory, progress=lambda msg: status.update(f"[bold]{model}[/]: {msg}"))
    except ValueError as exc:
        fail(str(exc))
    _save(result, out or Path("runs/bench") / f"backends-{model}.json")

    env = result["env"]
    table = Table(title=f"{model} fused  3 x {hw[0]} x {hw[1]}  backends")
    for col in ("backend", "batch", "median ms", "p90 ms", "frames/s", "GFLOP/s", "% of peak", "peak RSS MB"):
        table.add_column(col, justify="left" if col == "backend" else "right")
    for key, r in result["results"].items():
        name, _, b = key.partition("/b")
        if "error" in r:
            table.add_row(name, b, f"[red]error: {escape(r['error'])}[/]", *[""] * 5)
            continue
        rss = r.get("peak_rss_bytes")
        table.add_row(name, str(r["batch"]), f"{r['median_ms']:.1f}", f"{r['p90_ms']:.1f}", f"{r['fps']:.1f}",
                      f"{r['achieved_gflops']:.0f}",
                      f"{100 * r['fraction_of_peak']:.0f}%" + (" (int8)" if name == "onnx-int8" else ""),
                      "-" if rss is None or rss < 0 else _mb(rss))
    typer.echo("")
    console.print(table)
    versions = f"torch {env['torch']}" + "".join(f", {m} {env[m]}" for m in ("onnxruntime", "onnx") if env.get(m))
    console.print(f"{env['cpu']}, {result['threads']} threads, {versions}, Python {env['python']}, "
                  f"load {env['load_avg_start']} -> {env['load_avg_end']}", highlight=False)
    int8 = result["int8_gemm_peak_gops"]
    console.print(f"peaks measured now: fp32 matmul {result['matmul_peak_gflops_fp32']:.0f} GFLOP/s"
                  + (f", int8 GEMM {int8:.0f} GOP/s" if int8 is not None else ""), highlight=False)
    console.print(f"timed: {result['timed']}")
    console.print(f"saved {out}")


@bench_app.command("pipeline", help="End-to-end pipeline frames/s (decode to BEV to rendered frame), per stage.")
def bench_pipeline(
    frames: int = typer.Option(60, help="Synchronised frames per case (file sources loop)."),
    dashcam: Path = typer.Option(None, help="1280x720 dashcam video for the single-camera case "
                                 "(default: a synthetic 1280x720 clip)."),
    threads: int = typer.Option(None, help="torch.set_num_threads (default: torch's choice)."),
    case: list[str] = typer.Option(None, "--case", help="Only these cases (index 0, 1, 2 or name)."),
    rig: Path = typer.Option(None, "--rig", help="Six-camera rig with sources (default: data/sample_drive/rig.yaml "
                             "when readable, else a synthetic 256x448 clip)."),
    precision: str = typer.Option("auto", help="auto (bf16 on CPUs with native bf16, fp16 on CUDA), fp32, bf16, fp16."),
    out: Path = typer.Option(Path("runs/bench/pipeline.json"), help="JSON output path."),
) -> None:
    from perception.cli.app import setup_logging
    from perception.pipeline.bench import bench_pipeline as run_bench

    setup_logging(False)
    if frames < 2:
        fail("--frames must be >= 2")
    if dashcam is not None and not dashcam.is_file():
        fail(f"{dashcam}: no such video")
    from perception.geometry import CalibrationError
    from perception.pipeline.sources import SourceError
    try:
        with console.status("benchmarking the pipeline") as status:
            result = run_bench(frames, dashcam, threads, case or None,
                               progress=lambda name: status.update(f"[bold]{name}[/]"), six_rig=rig,
                               precision=precision)
    except (SourceError, CalibrationError, ValueError) as exc:
        fail(str(exc))
    _save(result, out)
    env = result["env"]
    table = Table(title=f"pipeline end to end  {env['device']} ({env['cpu']}, {env['cores']} cores)  "
                        f"torch {env['torch']}  {env['date']}")
    stages = ("preprocess", "model", "decode", "lift", "bev", "track", "render", "sinks", "total")
    for col in ("case", "precision", "threads", "frames", "frames/s", *[f"{s} ms" for s in stages], "CPU ms/frame", "model-only fps", "load"):
        table.add_column(col, justify="left" if col == "case" else "right")
    for r in result["results"]:
        lat = r["latency_ms"]
        table.add_row(r["case"], r.get("precision", "fp32"), str(r.get("torch_threads", "")), str(r["frames"]),
                      f"{r['fps']:.2f}",
                      *[f"{lat[s]:.0f}" if s in lat else "-" for s in stages], f"{r['cpu_ms_per_frame']:.0f}",
                      f"{r['model_only_fps']:.1f}",
                      f"{r['load_before']:.1f}/{r['load_after']:.1f}")
    typer.echo("")
    console.print(table, width=max(console.width, 180))
    console.print(f"timed: {result['timed']}")
    console.print(f"saved {out}")


def _save(result: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
