"""The Typer application that every command module registers on.

Each command lives in its own module under :mod:`perception.cli` so that a newcomer finds
the code of ``perception X`` in ``perception/cli/X.py``.
"""

from __future__ import annotations

import logging
import sys
from typing import NoReturn

import typer
from rich.console import Console
from rich.markup import escape

app = typer.Typer(
    name="perception",
    help="Multi-camera driving perception: RepVGG detection + metric depth + bird's-eye view.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
bench_app = typer.Typer(help="Benchmarks: model latency/memory/FLOPs, end-to-end pipeline.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")

# Wide enough for the benchmark tables even when stderr is not a terminal (CI logs, pipes).
console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)


def fail(message: str, code: int = 1) -> NoReturn:
    """Exit with a one-line reason on stderr (the CLI contract for bad input)."""
    console.print(f"[bold red]error:[/] {escape(message)}", highlight=False)  # messages quote [..] lists
    raise typer.Exit(code)


def not_built(command: str, reason: str) -> NoReturn:
    """Commands that are designed but not implemented yet say so, with why, and exit 2."""
    console.print(f"[yellow]perception {command}: not built yet[/] ({reason}).", highlight=False)
    raise typer.Exit(2)


def register_backends() -> None:
    """Register the deploy layer's model-stage backends (``onnx``, ``onnxruntime``, ``tensorrt``)
    with the pipeline's registry. Every command that takes ``--backend`` calls it; it is not done at
    start-up because it loads torch, which ``perception --help`` does not need."""
    import perception.deploy  # noqa: F401  (registration happens on import)


def register_model_formats() -> None:
    """Register the compressed model file formats (Deep Compression ``.pdc``, binary and
    channel-pruned safetensors) with :func:`perception.nn.resolve_model`. Every command that takes
    ``--model`` calls it; like :func:`register_backends` it is not done at start-up (it loads torch)."""
    import perception.compress  # noqa: F401  (registration happens on import)

def setup_logging(verbose: bool = False) -> None:
    level = logging.DEBUG if verbose else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
