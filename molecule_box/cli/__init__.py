"""The ``molecule-box`` command, one module per kind of command.

* :mod:`.run`: ``run`` (the box itself) and ``config`` (its settings);
* :mod:`.service`: what runs on the box's host: ``systemd``, ``backup``, ``restore``, ``doctor``;
* :mod:`.remote`: a client of a running box over its HTTP API: ``login``, ``workspaces``, ``tokens``,
  ``secrets``, ``events``, ``logs``;
* :mod:`.migrate`: ``migrate``, moving workspaces to another backend through the running box;
* :mod:`.plugins`: ``plugins add|list``, the agent plugin registry on the box's host.
"""

from __future__ import annotations

import click

from .._version import __version__
from . import migrate, plugins, remote, run, service


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="molecule-box")
def main() -> None:
    """molecule-box: AI-agent workspaces on one box."""


main.add_command(run.run)
main.add_command(run.show_config)
service.register(main)
remote.register(main)
plugins.register(main)
main.add_command(migrate.migrate)
