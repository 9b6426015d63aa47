"""`perception bench model|pipeline`: honest speed, memory and FLOP figures."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from perception.cli.app import bench_app, console, fail, not_built


def _mb(nbytes: float) -> str:
    return f"{nbytes / 2**20:.1f}"


@bench_app.command("model", help="Train vs fused form of a model: latency, frames/s, memory, FLOPs, GFLOP/s.")
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
    out: Path = typer.Option(None, help="JSON output path (default runs/bench/model-<name>-<device>-<dtype>.json)."),
) -> None:
    from perception.deploy.bench import BenchSettings, bench_model, parse_size
    from perception.nn import list_models

    if model not in list_models():
        fail(f"unknown model {model!r}; registered: {', '.join(list_models())}")
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
    out = out or Path("runs/bench") / f"model-{model}-{device}-{dtype}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))

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


@bench_app.command(
    "pipeline",
    help="End-to-end pipeline benchmark (decode to BEV to rendered frame).",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
)
def bench_pipeline(ctx: typer.Context) -> None:
    not_built("bench pipeline", "issue 5 (pipeline)")
