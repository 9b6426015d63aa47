"""`perception run`: Run the pipeline on a video, camera or rig."""

from __future__ import annotations

import typer

from perception.cli.app import app, not_built


@app.command(
    "run",
    help="Run the pipeline on a video, camera or rig.",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
)
def run_command(ctx: typer.Context) -> None:
    not_built("run", "issue 5 (pipeline)")
