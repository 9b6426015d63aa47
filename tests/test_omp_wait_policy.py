"""``OMP_WAIT_POLICY=PASSIVE`` is the command line's choice, not the library's: ``import perception``
leaves the environment alone, the CLI sets it before torch loads (the only time it takes effect)
and a value the user set wins."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROBE = "import os, sys; {imports}; print(os.environ.get('OMP_WAIT_POLICY'), 'torch' in sys.modules)"


def _probe(imports: str, **env_extra: str) -> str:
    """Run ``imports`` in a fresh interpreter without OMP_WAIT_POLICY (conftest sets it for this
    process) and return what it then sees: the variable and whether torch is loaded."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"} | env_extra
    done = subprocess.run([sys.executable, "-c", PROBE.format(imports=imports)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_importing_the_library_leaves_the_environment_alone():
    assert _probe("import perception, perception.nn") == "None True"


def test_cli_sets_passive_before_torch_loads():
    # perception/cli is what the `perception` script, `python -m perception` and
    # `python -m perception.cli` import first; torch must not be loaded yet, or the setting is void.
    assert _probe("import perception.cli") == "PASSIVE False"


def test_a_value_the_user_set_wins():
    assert _probe("import perception.cli", OMP_WAIT_POLICY="ACTIVE") == "ACTIVE False"
