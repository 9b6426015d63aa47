"""`perception train`: Train a model from a config file."""

from __future__ import annotations

import typer

from perception.cli.app import app, not_built


@app.command(
    "train",
    help="Train a model from a config file.",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
)
def train_command(ctx: typer.Context) -> None:
    not_built("train", "issue 6 (training)")
