"""`perception demo`: Run the whole pipeline on the embedded synthetic six-camera drive."""

from __future__ import annotations

import typer

from perception.cli.app import app, not_built


@app.command(
    "demo",
    help="Run the whole pipeline on the embedded synthetic six-camera drive.",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
)
def demo_command(ctx: typer.Context) -> None:
    not_built("demo", "issue 5 (pipeline and demo)")
