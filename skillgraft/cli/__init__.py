"""The ``skillgraft`` command line. Every command takes ``--store`` (env SKILLGRAFT_STORE; default a local directory).

Commands that train run the Prefect ``retrain`` flow (imported only then: the core library does not need Prefect).
Each group of commands lives in its own module and is registered here.
"""

from __future__ import annotations

import typer

from skillgraft.cli import data, guard, loop, registry, server
from skillgraft.cli.errors import friendly

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__, pretty_exceptions_enable=False)
for group in (loop, data, registry, server):
    for command in group.app.registered_commands:
        command.callback = friendly(command.callback)  # one clear line and an exit code, never a traceback
        app.registered_commands.append(command)
for command in guard.app.registered_commands:
    command.callback = friendly(command.callback)
app.add_typer(guard.app, name="guard")


def main() -> None:
    app()
