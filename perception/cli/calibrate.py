"""`perception calibrate`: Calibrate a camera from chessboard images."""

from __future__ import annotations

import typer

from perception.cli.app import app, not_built


@app.command(
    "calibrate",
    help="Calibrate a camera from chessboard images.",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
)
def calibrate_command(ctx: typer.Context) -> None:
    not_built("calibrate", "issue 4 (geometry)")
