"""`perception live`: Run the pipeline live on a camera."""

from __future__ import annotations

import typer

from perception.cli.app import app, not_built


@app.command(
    "live",
    help="Run the pipeline live on a camera.",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
)
def live_command(ctx: typer.Context) -> None:
    not_built("live", "issue 5 (pipeline)")
