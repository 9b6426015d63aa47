"""`perception compress`: Compress a model (lottery, morphnet, deep-compression, binary, distill)."""

from __future__ import annotations

import typer

from perception.cli.app import app, not_built


@app.command(
    "compress",
    help="Compress a model (lottery, morphnet, deep-compression, binary, distill).",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
)
def compress_command(ctx: typer.Context) -> None:
    not_built("compress", "issue 8 (compression toolkit)")
