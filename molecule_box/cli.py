"""The ``molecule-box`` command."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import click
import trio

from . import __version__
from .config import SETTINGS, Settings
from .errors import ConfigError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="molecule-box")
def main() -> None:
    """molecule-box: AI-agent workspaces on one box."""


def load_settings(env_file: Path | None) -> Settings:
    try:
        return Settings.from_env(env_file=env_file)
    except ConfigError as exc:
        click.echo("molecule-box: invalid configuration:", err=True)
        for problem in exc.problems:
            click.echo(f"  - {problem}", err=True)
        sys.exit(2)


@main.command()
@click.option("--env-file", type=click.Path(dir_okay=False, path_type=Path),
              help="KEY=VALUE file; the process environment wins over it.")
def run(env_file: Path | None) -> None:
    """Serve the API and run every workspace until SIGTERM/SIGINT (a second signal exits at once)."""
    from . import logs

    settings = load_settings(env_file)
    logs.setup(settings.log_level)
    try:
        trio.run(_run, settings)
    except ConfigError as exc:
        for problem in exc.problems:
            click.echo(f"molecule-box: {problem}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)


async def _run(settings: Settings) -> None:
    async with trio.open_nursery() as nursery:
        box = await nursery.start(_serve_then_stop, settings, nursery.cancel_scope)
        nursery.start_soon(_signals, box)


async def _serve_then_stop(settings: Settings, scope: trio.CancelScope,
                           task_status: trio.TaskStatus[object] = trio.TASK_STATUS_IGNORED) -> None:
    from .box import serve

    await serve(settings, task_status=task_status)
    scope.cancel()  # the server finished its graceful stop: end the signal watcher too


async def _signals(box: object) -> None:
    import logging

    log = logging.getLogger("molecule_box")
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            if not box.shutdown_requested.is_set():  # type: ignore[attr-defined]
                log.info("%s: finishing in-flight requests, then stopping (again to exit at once)",
                         signal.Signals(signum).name)
                box.shutdown_requested.set()  # type: ignore[attr-defined]
                continue
            log.warning("second signal: exiting now")
            raise KeyboardInterrupt


@main.command("config")
def show_config() -> None:
    """List every setting with its default and meaning."""
    for setting in SETTINGS:
        default = "" if setting.default in (None, ()) else f" (default: {setting.default})"
        click.echo(f"{setting.env}{default}\n    {setting.help}")


def _register_operator_commands() -> None:
    from .operator import register

    register(main)


_register_operator_commands()
