"""The ``dockyard`` command: ``server``, ``agent``, ``up`` and ``logs``.

Each command module keeps its heavy imports inside its functions, so the agent stays small.
"""

from __future__ import annotations

import typer

from dockyard.cli.agent_cmd import agent as agent_command
from dockyard.cli.agent_cmd import logs as logs_command
from dockyard.cli.server_cmd import server as server_command
from dockyard.cli.up_cmd import up as up_command

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Dockyard: ECS you can run yourself.")


@app.callback()
def _root() -> None:
    """Dockyard: ECS you can run yourself."""


app.command("server")(server_command)
app.command("agent")(agent_command)
app.command("up")(up_command)
app.command("logs")(logs_command)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
