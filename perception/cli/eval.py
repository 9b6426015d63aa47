"""`perception eval`: Evaluate a model on synth / KITTI / nuScenes / video."""

from __future__ import annotations

import typer

from perception.cli.app import app, not_built


@app.command(
    "eval",
    help="Evaluate a model on synth / KITTI / nuScenes / video.",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
)
def eval_command(ctx: typer.Context) -> None:
    not_built("eval", "issue 6 (evaluation)")
