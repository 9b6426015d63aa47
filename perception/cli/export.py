"""`perception export`: Export the fused model to ONNX or TensorRT."""

from __future__ import annotations

import typer

from perception.cli.app import app, not_built


@app.command(
    "export",
    help="Export the fused model to ONNX or TensorRT.",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
)
def export_command(ctx: typer.Context) -> None:
    not_built("export", "issue 7 (deployment)")
