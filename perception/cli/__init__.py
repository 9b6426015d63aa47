"""Command line entry point: ``perception <command>``.

Importing this package registers every command module on :data:`app`.
"""

from perception.cli.app import app
from perception.cli import (  # noqa: F401  (imported for their @app.command registrations)
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
