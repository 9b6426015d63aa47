"""`perception synth`: Render a synthetic multi-camera driving dataset."""

from __future__ import annotations

import typer

from perception.cli.app import app, not_built


@app.command(
    "synth",
    help="Render a synthetic multi-camera driving dataset.",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
)
def synth_command(ctx: typer.Context) -> None:
    not_built("synth", "issue 4 (synthetic world)")
