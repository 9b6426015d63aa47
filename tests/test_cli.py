"""The command line: every DESIGN.md command is listed; unbuilt ones say so and exit 2."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from perception.cli import app

runner = CliRunner()
DESIGN_COMMANDS = ["demo", "run", "live", "eval", "train", "export", "bench", "compress", "synth", "calibrate"]


def test_help_lists_every_design_command():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for cmd in DESIGN_COMMANDS:
        assert cmd in result.output, cmd
    bench = runner.invoke(app, ["bench", "--help"])
    assert "model" in bench.output and "pipeline" in bench.output


def test_bench_model_rejects_unknown_model():
    result = runner.invoke(app, ["bench", "model", "--model", "nope"])
    assert result.exit_code == 1
    assert "unknown model" in result.output


@pytest.mark.slow
def test_bench_model_writes_json(tmp_path):
    out = tmp_path / "b.json"
    result = runner.invoke(app, ["bench", "model", "--model", "rep-n", "--batch", "1", "--size", "64x96",
                                 "--iters", "2", "--warmup", "0", "--out", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert set(data["results"]) == {"train", "fused"}
    assert data["ratios"]["params_fused_over_train"] < 1
    assert data["matmul_peak_gflops"] > 0 and data["env"]["torch"]


def test_every_command_has_help():
    for cmd in DESIGN_COMMANDS:
        result = runner.invoke(app, [cmd, "--help"])
        assert result.exit_code == 0, (cmd, result.output)


def test_unbuilt_command_says_so_and_exits_2():
    import typer

    from perception.cli.app import not_built

    stub = typer.Typer()

    @stub.command()
    def later() -> None:
        not_built("later", "needs a GPU backend")

    @stub.command()
    def other() -> None:
        pass

    result = runner.invoke(stub, ["later"])
    assert result.exit_code == 2 and "not built yet" in result.output and "needs a GPU backend" in result.output
