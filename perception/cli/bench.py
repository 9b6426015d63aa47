"""`perception bench model|pipeline`: honest speed, memory and FLOP figures."""

from __future__ import annotations

import typer

from perception.cli.app import bench_app, not_built


@bench_app.command(
    "pipeline",
    help="End-to-end pipeline benchmark (decode to BEV to rendered frame).",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
)
def bench_pipeline(ctx: typer.Context) -> None:
    not_built("bench pipeline", "issue 5 (pipeline)")
