"""Command line entry point: ``perception <command>``.

Importing this package registers every command module on :data:`app`.
"""

import os

# OpenMP threads that spin while waiting (the default) starve our capture/render threads and any
# other process on small machines: measured 15-40x slower torch ops on a busy 2-core box.
# Passive waiting costs nothing measurable on an idle one. It only takes effect if set before
# torch loads, hence here, before the command modules are imported (``perception``, ``python -m
# perception`` and ``python -m perception.cli`` all start here); a value the user set wins. The
# library itself (``import perception``) leaves the environment alone.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from perception.cli.app import app  # noqa: E402
from perception.cli import (  # noqa: E402, F401  (imported for their @app.command registrations)
    adapt,
    bench,
    calibrate,
    compress,
    demo,
    eval,
    export,
    live,
    run,
    synth,
    train,
)


def main() -> None:
    app()


__all__ = ["app", "main"]
