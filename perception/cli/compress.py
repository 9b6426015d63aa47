"""`perception compress METHOD`: lottery, morphnet, deep-compression, binary, distill.

Each method writes its compressed model and ``report.json`` into ``--out``. Without
``--init`` the model is first trained on the data for ``--steps`` (the dense baseline); with no
``--data`` the data is the built-in proxy task (see ``perception/compress/common.py`` and
docs/compression.md: proxy metrics, not rep-s accuracy).
"""

from __future__ import annotations

import json
import logging
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Optional

import torch
import typer

from perception.cli.app import app, console, fail, setup_logging

METHODS = ("lottery", "morphnet", "deep-compression", "binary", "distill")
log = logging.getLogger(__name__)


@app.command("compress", help="Compress a model: lottery, morphnet, deep-compression, binary, distill.")
def compress_command(
    method: str = typer.Argument(..., help=f"one of {', '.join(METHODS)}"),
    model: str = typer.Option("rep-n", "--model", help="registered model name (the student for distill)"),
    init: Optional[Path] = typer.Option(None, "--init", help="train-form checkpoint to start from (else trained "
                                        "here); deep-compression also takes a fused one"),
    out: Path = typer.Option(..., "--out", help="output folder (required: runs can take a while)"),
    data: Optional[list[str]] = typer.Option(None, "--data", help="sample folder or synth: spec (default: proxy task)"),
    size: str = typer.Option("64x96", "--size", help="input HxW"),
    steps: int = typer.Option(300, "--steps", help="training steps of each (re)training"),
    batch: int = typer.Option(8, "--batch"),
    lr: float = typer.Option(2e-3, "--lr"),
    frames: int = typer.Option(48, "--frames", help="training frames of the proxy task / per data source"),
    val_frames: int = typer.Option(16, "--val-frames", help="held-out frames for the proxy metrics"),
    seed: int = typer.Option(0, "--seed"),
    tiny: bool = typer.Option(False, "--tiny", help="shrink the model to the test-size config (smoke runs)"),
    threads: int = typer.Option(0, "--threads", help="torch CPU threads (0: leave as is)"),
    # lottery
    rate: float = typer.Option(0.2, "--rate", help="lottery: fraction of remaining weights pruned per round"),
    min_density: float = typer.Option(0.05, "--min-density", help="lottery: stop at this density"),
    rounds: Optional[int] = typer.Option(None, "--rounds", help="lottery: number of rounds (overrides --min-density)"),
    rewind: int = typer.Option(0, "--rewind", help="lottery: rewind to the weights after this many steps"),
    no_control: bool = typer.Option(False, "--no-control", help="lottery: skip the random-reinit control"),
    resume: bool = typer.Option(False, "--resume", help="lottery: continue the run saved in --out "
                                "(lottery-state.pt, written after every round); more --rounds extend it"),
    # morphnet
    strength: float = typer.Option(1e-3, "--strength", help="morphnet: regulariser strength"),
    shrink_flops: float = typer.Option(0.5, "--shrink-flops", help="morphnet: FLOP fraction after shrinking"),
    from_init: bool = typer.Option(False, "--from-init", help="morphnet: start the regularised training from the "
                                   "--init weights instead of from scratch"),
    no_expand: bool = typer.Option(False, "--no-expand", help="morphnet: stop after shrink + fine-tune (the "
                                   "expanded network is a training from scratch)"),
    # deep compression
    sparsity: float = typer.Option(0.9, "--sparsity", help="deep-compression: pruned fraction per layer"),
    bits: int = typer.Option(4, "--bits", help="deep-compression: index bits (2**bits shared weights per layer)"),
    finetune: int = typer.Option(100, "--finetune", help="deep-compression/binary: fine-tuning steps"),
    prune_scope: str = typer.Option("layer", "--prune-scope", help="deep-compression: magnitude threshold per layer "
                                    "or one global threshold"),
    amp: str = typer.Option("none", "--amp", help="bf16: autocast the training forward passes (faster on CPUs "
                            "with native bf16), none: fp32"),
    center_codebook: bool = typer.Option(False, "--center-codebook", help="deep-compression: a second codebook for "
                                         "the centre taps of 3x3 kernels (where fused RepVGG kernels are large)"),
    quant_finetune: int = typer.Option(0, "--quant-finetune", help="deep-compression: steps fine-tuning the shared "
                                       "weights (k-means centroids) after weight sharing"),
    # binary
    mode: str = typer.Option("bwn", "--mode", help="binary: bwn or xnor"),
    # distill
    teacher: str = typer.Option("rep-s", "--teacher", help="distill: model name or checkpoint path"),
    teacher_steps: int = typer.Option(0, "--teacher-steps", help="distill: train the teacher this long (0: 2x steps)"),
    temperature: float = typer.Option(2.0, "--temperature", help="distill: soft-target temperature"),
) -> None:
    setup_logging()
    if method not in METHODS:
        fail(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if threads > 0:
        torch.set_num_threads(threads)
    from perception.compress import binarize, deep_compression, distill, lottery, morphnet
    from perception.compress.common import TINY_OVERRIDES, FitConfig, fit, load_data
    from perception.deploy.bench import parse_size
    from perception.nn import create_model, list_models, load_checkpoint

    try:
        hw = parse_size(size)
    except ValueError as exc:
        fail(str(exc))
    if model not in list_models():
        fail(f"unknown model {model!r}; registered: {', '.join(list_models())}")
    if init is not None and not init.is_file():
        fail(f"{init}: checkpoint not found")
    if resume and method != "lottery":
        fail("--resume is only for lottery (the other methods finish in one training)")
    if mode not in ("bwn", "xnor"):
        fail(f"--mode must be bwn or xnor, got {mode!r}")
    if from_init and init is None:
        fail("--from-init needs --init CKPT (a trained train-form checkpoint)")
    if amp not in ("none", "bf16"):
        fail(f"--amp must be none or bf16, got {amp!r}")
    if prune_scope not in ("layer", "global"):
        fail(f"--prune-scope must be layer or global, got {prune_scope!r}")
    if not 0 < sparsity < 1 or not 1 <= bits <= 8:
        fail("--sparsity must be in (0, 1) and --bits in 1..8")
    overrides = TINY_OVERRIDES if tiny else {}

    def make(name: str, shrink: bool = True) -> Callable[[int], torch.nn.Module]:
        def build(s: int):  # noqa: ANN202
            torch.manual_seed(s)
            return create_model(name, **(overrides if shrink else {}))
        return build

    try:
        ds = load_data(data, hw, frames=frames, val_frames=val_frames, seed=seed)
    except (ValueError, FileNotFoundError) as exc:
        fail(str(exc))
    fcfg = FitConfig(steps=steps, batch=batch, lr=lr, seed=seed, amp=amp)

    def trained(name: str, path: Optional[Path], n_steps: int, shrink: bool = True):  # noqa: ANN202
        if path is not None:
            m = load_checkpoint(path)
            # deep compression works on the fused form anyway (e.g. its own pruned-finetuned.safetensors)
            if m.is_reparameterized and method != "deep-compression":
                fail(f"{path}: need a train-form checkpoint")
            return m
        console.print(f"training {name} for {n_steps} steps on {ds.description}")
        return fit(make(name, shrink)(seed), ds, FitConfig(**{**fcfg.__dict__, "steps": n_steps}))

    out.mkdir(parents=True, exist_ok=True)
    with _fit_progress():  # one progress bar per training run of the method
        if method == "lottery":
            report = lottery.run_lottery(make(model), ds, fcfg, lottery.LotteryConfig(
                rate=rate, min_density=min_density, rounds=rounds, rewind_step=rewind,
                random_control=not no_control), out, resume=resume)
            summary = {"dense": report["dense"], "matching_density": report["matching_density"]}
        elif method == "morphnet":
            dense = trained(model, init, steps) if init else None
            report = morphnet.run_morphnet(make(model), ds, fcfg, morphnet.MorphNetConfig(
                strength=strength, shrink_flops=shrink_flops, from_dense=from_init, expand=not no_expand), out,
                dense=dense)
            summary = {k: {m: report[k][m] for m in ("proxy_map50", "flops", "cpu_latency_ms")}
                       for k in ("dense", "shrunk", "expanded") if report[k] is not None}
        elif method == "deep-compression":
            report = deep_compression.run_deep_compression(trained(model, init, steps), ds, fcfg, deep_compression.
                                                           DeepCompressionConfig(sparsity=sparsity, bits=bits,
                                                                                 finetune_steps=finetune,
                                                                                 quant_finetune_steps=quant_finetune,
                                                                                 scope=prune_scope,
                                                                                 center_codebook=center_codebook),
                                                           out)
            summary = {"storage_ratio_vs_fp32": report["storage_ratio_vs_fp32"], "decoded": report["decoded"],
                       "dense": {k: report["dense_fused"][k] for k in ("proxy_map50", "proxy_abs_rel")}}
        elif method == "binary":
            report = binarize.run_binary(trained(model, init, steps), ds, fcfg,
                                         binarize.BinaryConfig(mode=mode, finetune_steps=finetune), out)
            summary = {"binarized": report["binarized"], "storage": report["storage"],
                       "speedup": report["ops"]["theoretical_speedup"]}
        else:
            tpath = Path(teacher)
            if tpath.is_file():
                t_model = load_checkpoint(tpath)
            elif teacher in list_models():
                # --tiny shrinks the student only
                t_model = trained(teacher, None, teacher_steps or 2 * steps, shrink=False)
            else:
                fail(f"--teacher {teacher!r} is neither a checkpoint nor a registered model")
            # the baseline student is trained exactly like the distilled one (never taken from --init)
            report = distill.run_distill(make(model), t_model, ds, fcfg, distill.DistillConfig(temperature=temperature),
                                         out)
            summary = {k: report[k] for k in ("teacher", "student_without_distillation", "student_distilled")}
    console.print_json(json.dumps(summary, default=float))
    console.print(f"wrote {out / 'report.json'}")


@contextmanager
def _fit_progress() -> Iterator[None]:
    """A progress bar (steps, loss, time left) for every training run of a method."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
        TimeRemainingColumn

    from perception.compress.common import report_progress

    task: list = []
    with Progress(TextColumn("[bold]train[/]"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("loss {task.fields[loss]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                  console=console) as prog:
        def update(step: int, steps: int, loss: float) -> None:
            if step == 1 or not task:
                task[:] = [prog.add_task("fit", total=steps, loss="-")]
            prog.update(task[0], completed=step, loss=f"{loss:.3f}")

        with report_progress(update):
            yield
