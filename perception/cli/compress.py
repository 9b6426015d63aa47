"""`perception compress METHOD`: lottery, morphnet, deep-compression, binary, distill.

One sub-command per method, each with its own options plus the shared data/training ones.
Each method writes its compressed model and ``report.json`` into ``--out``. Without
``--init`` the model is first trained on the data for ``--steps`` (the dense baseline); with no
``--data`` the data is the built-in proxy task (see ``perception/compress/common.py`` and
docs/compression.md: proxy metrics, not rep-s accuracy).
"""

from __future__ import annotations

import json
import logging
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Callable, Iterator, Optional

import typer
from typer.core import TyperGroup

from perception.cli.app import app, console, fail, setup_logging

if TYPE_CHECKING:
    from perception.compress.common import FitConfig, ProxyData
    from perception.nn.model import PerceptionNet

METHODS = ("lottery", "morphnet", "deep-compression", "binary", "distill")
log = logging.getLogger(__name__)


class _MethodGroup(TyperGroup):
    """``perception compress NAME`` with an unknown NAME: say which methods exist."""

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        if args and not args[0].startswith("-") and args[0] not in self.commands:
            ctx.fail(f"unknown method {args[0]!r}; choose one of {', '.join(METHODS)}")
        return super().resolve_command(ctx, args)


compress_app = typer.Typer(cls=_MethodGroup, no_args_is_help=True,
                           help="Compress a model: lottery, morphnet, deep-compression, binary, distill. "
                                "`perception compress METHOD --help` lists a method's options.")
app.add_typer(compress_app, name="compress")

# ------------------------------------------------------------------ options shared by every method
_SHARED = "Data and training (every method)"
Model = Annotated[str, typer.Option("--model", help="registered model name", rich_help_panel=_SHARED)]
Out = Annotated[Path, typer.Option("--out", help="output folder (required: runs can take a while)",
                                   rich_help_panel=_SHARED)]
Data = Annotated[Optional[list[str]], typer.Option("--data", help="sample folder or synth: spec (default: proxy "
                                                   "task)", rich_help_panel=_SHARED)]
Size = Annotated[str, typer.Option("--size", help="input HxW", rich_help_panel=_SHARED)]
Steps = Annotated[int, typer.Option("--steps", help="training steps of each (re)training", rich_help_panel=_SHARED)]
Batch = Annotated[int, typer.Option("--batch", rich_help_panel=_SHARED)]
Lr = Annotated[float, typer.Option("--lr", rich_help_panel=_SHARED)]
Frames = Annotated[int, typer.Option("--frames", help="training frames of the proxy task / per data source",
                                     rich_help_panel=_SHARED)]
ValFrames = Annotated[int, typer.Option("--val-frames", help="held-out frames for the proxy metrics",
                                        rich_help_panel=_SHARED)]
Seed = Annotated[int, typer.Option("--seed", rich_help_panel=_SHARED)]
Tiny = Annotated[bool, typer.Option("--tiny", help="shrink the model to the test-size config (smoke runs)",
                                    rich_help_panel=_SHARED)]
Threads = Annotated[int, typer.Option("--threads", help="torch CPU threads (0: leave as is)",
                                      rich_help_panel=_SHARED)]
Amp = Annotated[str, typer.Option("--amp", help="bf16: autocast the training forward passes (faster on CPUs with "
                                  "native bf16), none: fp32", rich_help_panel=_SHARED)]
Finetune = Annotated[int, typer.Option("--finetune", help="fine-tuning steps after compressing")]


@dataclass
class _Run:
    """The validated shared options: data, fit settings, model builders."""

    model: str
    out: Path
    seed: int
    steps: int
    overrides: dict[str, Any]
    ds: ProxyData
    fcfg: FitConfig

    def make(self, name: str, shrink: bool = True) -> Callable[[int], PerceptionNet]:
        """``seed -> fresh model`` (``--tiny`` shrinks it unless ``shrink=False``)."""
        import torch

        from perception.nn import create_model

        def build(s: int) -> PerceptionNet:
            torch.manual_seed(s)
            return create_model(name, **(self.overrides if shrink else {}))
        return build

    def trained(self, name: str, n_steps: int, shrink: bool = True) -> PerceptionNet:
        from perception.compress.common import FitConfig, fit

        console.print(f"training {name} for {n_steps} steps on {self.ds.description}")
        return fit(self.make(name, shrink)(self.seed), self.ds, FitConfig(**{**self.fcfg.__dict__, "steps": n_steps}))

    def dense(self, init: Optional[Path], fused_ok: bool = False) -> PerceptionNet:
        """The trained model to compress: ``--init`` or trained here for ``--steps``."""
        return _checkpoint(init, fused_ok) if init is not None else self.trained(self.model, self.steps)


def _checkpoint(path: Path, fused_ok: bool = False) -> PerceptionNet:
    from perception.nn import load_checkpoint

    if not path.is_file():
        fail(f"{path}: checkpoint not found")
    try:
        m = load_checkpoint(path)
    except (ValueError, OSError) as exc:
        fail(f"{path}: {exc}")
    if m.is_reparameterized and not fused_ok:
        fail(f"{path}: need a train-form checkpoint")
    return m


def _init_exists(init: Optional[Path]) -> None:
    if init is not None and not init.is_file():
        fail(f"{init}: checkpoint not found")


def _prepare(model: str, out: Path, data: Optional[list[str]], size: str, steps: int, batch: int, lr: float,
             frames: int, val_frames: int, seed: int, tiny: bool, threads: int, amp: str) -> _Run:
    """Validate the shared options (one-line errors) and load the data."""
    setup_logging()
    import torch

    from perception.compress.common import TINY_OVERRIDES, FitConfig, load_data
    from perception.geometry.resize import parse_size
    from perception.nn import list_models

    if threads > 0:
        torch.set_num_threads(threads)
    try:
        hw = parse_size(size)
    except ValueError as exc:
        fail(str(exc))
    if model not in list_models():
        fail(f"unknown model {model!r}; registered: {', '.join(list_models())}")
    if amp not in ("none", "bf16"):
        fail(f"--amp must be none or bf16, got {amp!r}")
    try:
        ds = load_data(data, hw, frames=frames, val_frames=val_frames, seed=seed)
    except (ValueError, FileNotFoundError) as exc:
        fail(str(exc))
    out.mkdir(parents=True, exist_ok=True)
    return _Run(model, out, seed, steps, TINY_OVERRIDES if tiny else {}, ds,
                FitConfig(steps=steps, batch=batch, lr=lr, seed=seed, amp=amp))


def _done(summary: dict[str, Any], out: Path) -> None:
    console.print_json(json.dumps(summary, default=float))
    console.print(f"wrote {out / 'report.json'}")


@compress_app.command("lottery", help="Lottery tickets: iterative magnitude pruning with rewinding, and a "
                      "random-reinitialisation control.")
def lottery_command(
    out: Out,
    rate: float = typer.Option(0.2, "--rate", help="fraction of remaining weights pruned per round"),
    min_density: float = typer.Option(0.05, "--min-density", help="stop at this density"),
    rounds: Optional[int] = typer.Option(None, "--rounds", help="number of rounds (overrides --min-density)"),
    rewind: int = typer.Option(0, "--rewind", help="rewind to the weights after this many steps"),
    no_control: bool = typer.Option(False, "--no-control", help="skip the random-reinit control"),
    resume: bool = typer.Option(False, "--resume", help="continue the run saved in --out (lottery-state.pt, "
                                "written after every round); more --rounds extend it"),
    init: Optional[Path] = typer.Option(None, "--init", help="train-form checkpoint (same --model/--tiny "
                                        "architecture) to start the dense training from instead of a random "
                                        "initialisation; the tickets rewind to it (or to --rewind steps after it), "
                                        "the control stays random"),
    model: Model = "rep-n", data: Data = None, size: Size = "64x96", steps: Steps = 300, batch: Batch = 8,
    lr: Lr = 2e-3, frames: Frames = 48, val_frames: ValFrames = 16, seed: Seed = 0, tiny: Tiny = False,
    threads: Threads = 0, amp: Amp = "none",
) -> None:
    from perception.compress import lottery

    _init_exists(init)
    if not 0 < rate < 1:
        fail(f"--rate must be in (0, 1), got {rate}")
    run = _prepare(model, out, data, size, steps, batch, lr, frames, val_frames, seed, tiny, threads, amp)
    start = None
    if init is not None:
        start = _checkpoint(init)
        try:
            run.make(model)(seed).load_state_dict(start.state_dict())
        except RuntimeError as exc:
            fail(f"{init} does not fit --model {model}{' --tiny' if tiny else ''}: {str(exc).splitlines()[0]}")
    with _fit_progress():
        report = lottery.run_lottery(run.make(model), run.ds, run.fcfg, lottery.LotteryConfig(
            rate=rate, min_density=min_density, rounds=rounds, rewind_step=rewind,
            random_control=not no_control), out, resume=resume, init=start)
    _done({"dense": report["dense"], "matching_density": report["matching_density"]}, out)


@compress_app.command("morphnet", help="MorphNet: FLOP-regularised training, channel shrinking, optional "
                      "uniform expansion.")
def morphnet_command(
    out: Out,
    init: Optional[Path] = typer.Option(None, "--init", help="trained train-form checkpoint: the dense reference "
                                        "(else trained here)"),
    strength: float = typer.Option(1e-3, "--strength", help="regulariser strength"),
    shrink_flops: float = typer.Option(0.5, "--shrink-flops", help="FLOP fraction after shrinking"),
    from_init: bool = typer.Option(False, "--from-init", help="start the regularised training from the --init "
                                   "weights instead of from scratch"),
    no_expand: bool = typer.Option(False, "--no-expand", help="stop after shrink + fine-tune (the expanded "
                                   "network is a training from scratch)"),
    model: Model = "rep-n", data: Data = None, size: Size = "64x96", steps: Steps = 300, batch: Batch = 8,
    lr: Lr = 2e-3, frames: Frames = 48, val_frames: ValFrames = 16, seed: Seed = 0, tiny: Tiny = False,
    threads: Threads = 0, amp: Amp = "none",
) -> None:
    from perception.compress import morphnet

    if from_init and init is None:
        fail("--from-init needs --init CKPT (a trained train-form checkpoint)")
    _init_exists(init)
    run = _prepare(model, out, data, size, steps, batch, lr, frames, val_frames, seed, tiny, threads, amp)
    with _fit_progress():
        dense = _checkpoint(init) if init is not None else None
        report = morphnet.run_morphnet(run.make(model), run.ds, run.fcfg, morphnet.MorphNetConfig(
            strength=strength, shrink_flops=shrink_flops, from_dense=from_init, expand=not no_expand), out,
            dense=dense)
    _done({k: {m: report[k][m] for m in ("proxy_map50", "flops", "cpu_latency_ms")}
           for k in ("dense", "shrunk", "expanded") if report[k] is not None}, out)


@compress_app.command("deep-compression", help="Deep Compression: magnitude pruning, fine-tuning, k-means weight "
                      "sharing, Huffman coding (.pdc file).")
def deep_compression_command(
    out: Out,
    init: Optional[Path] = typer.Option(None, "--init", help="trained checkpoint to compress, train or fused form "
                                        "(else trained here)"),
    sparsity: float = typer.Option(0.9, "--sparsity", help="pruned fraction per layer"),
    bits: int = typer.Option(4, "--bits", help="index bits (2**bits shared weights per layer)"),
    finetune: Finetune = 100,
    prune_scope: str = typer.Option("layer", "--prune-scope", help="magnitude threshold per layer or one global "
                                    "threshold"),
    center_codebook: bool = typer.Option(False, "--center-codebook", help="a second codebook for the centre taps "
                                         "of 3x3 kernels (where fused RepVGG kernels are large)"),
    quant_finetune: int = typer.Option(0, "--quant-finetune", help="steps fine-tuning the shared weights (k-means "
                                       "centroids) after weight sharing"),
    model: Model = "rep-n", data: Data = None, size: Size = "64x96", steps: Steps = 300, batch: Batch = 8,
    lr: Lr = 2e-3, frames: Frames = 48, val_frames: ValFrames = 16, seed: Seed = 0, tiny: Tiny = False,
    threads: Threads = 0, amp: Amp = "none",
) -> None:
    from perception.compress import deep_compression

    if prune_scope not in ("layer", "global"):
        fail(f"--prune-scope must be layer or global, got {prune_scope!r}")
    if not 0 < sparsity < 1 or not 1 <= bits <= 8:
        fail("--sparsity must be in (0, 1) and --bits in 1..8")
    _init_exists(init)
    run = _prepare(model, out, data, size, steps, batch, lr, frames, val_frames, seed, tiny, threads, amp)
    with _fit_progress():
        # deep compression works on the fused form anyway (e.g. its own pruned-finetuned.safetensors)
        report = deep_compression.run_deep_compression(run.dense(init, fused_ok=True), run.ds, run.fcfg,
                                                       deep_compression.DeepCompressionConfig(
                                                           sparsity=sparsity, bits=bits, finetune_steps=finetune,
                                                           quant_finetune_steps=quant_finetune, scope=prune_scope,
                                                           center_codebook=center_codebook), out)
    _done({"storage_ratio_vs_fp32": report["storage_ratio_vs_fp32"], "decoded": report["decoded"],
           "dense": {k: report["dense_fused"][k] for k in ("proxy_map50", "proxy_abs_rel")}}, out)


@compress_app.command("binary", help="Binary weights (BWN) or weights and activations (XNOR) of the inner 3x3 "
                      "convolutions, fine-tuned with a straight-through estimator.")
def binary_command(
    out: Out,
    mode: str = typer.Option("bwn", "--mode", help="bwn or xnor"),
    init: Optional[Path] = typer.Option(None, "--init", help="trained train-form checkpoint to binarize (else "
                                        "trained here)"),
    finetune: Finetune = 100,
    model: Model = "rep-n", data: Data = None, size: Size = "64x96", steps: Steps = 300, batch: Batch = 8,
    lr: Lr = 2e-3, frames: Frames = 48, val_frames: ValFrames = 16, seed: Seed = 0, tiny: Tiny = False,
    threads: Threads = 0, amp: Amp = "none",
) -> None:
    from perception.compress import binarize

    if mode not in ("bwn", "xnor"):
        fail(f"--mode must be bwn or xnor, got {mode!r}")
    _init_exists(init)
    run = _prepare(model, out, data, size, steps, batch, lr, frames, val_frames, seed, tiny, threads, amp)
    with _fit_progress():
        report = binarize.run_binary(run.dense(init), run.ds, run.fcfg,
                                     binarize.BinaryConfig(mode=mode, finetune_steps=finetune), out)
    _done({"binarized": report["binarized"], "storage": report["storage"],
           "speedup": report["ops"]["theoretical_speedup"]}, out)


@compress_app.command("distill", help="Knowledge distillation: the --model student trained with a teacher "
                      "against the same student trained without it.")
def distill_command(
    out: Out,
    teacher: str = typer.Option("rep-s", "--teacher", help="model name (trained here) or checkpoint path"),
    teacher_steps: int = typer.Option(0, "--teacher-steps", help="train the teacher this long (0: 2x --steps)"),
    temperature: float = typer.Option(2.0, "--temperature", help="soft-target temperature"),
    model: Model = "rep-n", data: Data = None, size: Size = "64x96", steps: Steps = 300, batch: Batch = 8,
    lr: Lr = 2e-3, frames: Frames = 48, val_frames: ValFrames = 16, seed: Seed = 0, tiny: Tiny = False,
    threads: Threads = 0, amp: Amp = "none",
) -> None:
    from perception.compress import distill
    from perception.nn import list_models

    if temperature <= 0:
        fail(f"--temperature must be positive, got {temperature}")
    run = _prepare(model, out, data, size, steps, batch, lr, frames, val_frames, seed, tiny, threads, amp)
    with _fit_progress():
        if Path(teacher).is_file():
            t_model = _checkpoint(Path(teacher), fused_ok=True)
        elif teacher in list_models():
            t_model = run.trained(teacher, teacher_steps or 2 * steps, shrink=False)  # --tiny shrinks the student only
        else:
            fail(f"--teacher {teacher!r} is neither a checkpoint nor a registered model")
        # the baseline student is trained exactly like the distilled one
        report = distill.run_distill(run.make(model), t_model, run.ds, run.fcfg,
                                     distill.DistillConfig(temperature=temperature), out)
    _done({k: report[k] for k in ("teacher", "student_without_distillation", "student_distilled")}, out)


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
