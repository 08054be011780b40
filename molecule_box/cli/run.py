"""``molecule-box run`` (the box itself, in the foreground) and ``molecule-box config`` (its settings)."""

from __future__ import annotations

import gc
import json
import logging
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import click
import trio

from ..config import Settings
from ..errors import ConfigError, leaves

if TYPE_CHECKING:
    from ..box import Box
    from ..ops.notify import Notifier

log = logging.getLogger("molecule_box")


def load_settings(env_file: Path | None) -> Settings:
    try:
        return Settings.from_env(env_file=env_file)
    except ConfigError as exc:
        _refuse(exc.problems)


def _refuse(problems: list[str]) -> NoReturn:
    """A start that cannot go ahead: one line per problem, each with its fix, and exit status 2."""
    for problem in problems:
        click.echo(f"molecule-box: {problem}", err=True)
    sys.exit(2)


@click.command()
@click.option("--env-file", type=click.Path(dir_okay=False, path_type=Path),
              help="KEY=VALUE file; the process environment wins over it.")
def run(env_file: Path | None) -> None:
    """Serve the API and run every workspace until SIGTERM/SIGINT (a second signal exits at once).

    Stays in the foreground. Exit status: 0 after a graceful stop, 2 when it cannot start (a bad setting,
    the port taken, the data dir not writable or in use, a backend plugin that fails to load: one line each,
    with the fix), 128+signal when a second signal cut the drain short. Under systemd (Type=notify) it
    reports READY, STATUS, STOPPING and pings the watchdog.
    """
    from ..ops import logs

    settings = load_settings(env_file)
    logs.setup(settings.log_level)
    try:
        code = trio.run(_run, settings)
    except BaseException as exc:  # trio wraps errors of the run's tasks in exception groups
        problems = [p for error in leaves(exc, ConfigError) for p in error.problems]
        if problems:
            _refuse(problems)
        if leaves(exc, KeyboardInterrupt):
            sys.exit(130)
        raise
    sys.exit(code)


class _Lifecycle:
    """What the signal watcher needs to know: the box once it serves, and the signal that forced an exit."""

    def __init__(self) -> None:
        self.box: Box | None = None
        self.forced_by: int | None = None


async def _run(settings: Settings) -> int:
    """The run nursery: signal watcher, watchdog, the box, then its status reporter; returns the exit status."""
    from ..ops.notify import Notifier, status_line

    state = _Lifecycle()
    gc.set_threshold(*GC_THRESHOLDS)  # before the restore (see _collect_garbage)
    with Notifier.from_environ() as notifier:
        async with trio.open_nursery() as nursery:
            await nursery.start(_signals, state, notifier, nursery.cancel_scope)
            nursery.start_soon(notifier.watchdog)
            await notifier.send("STATUS=starting: opening the store, restoring workspaces")
            box = await nursery.start(_serve_then_stop, settings, state, nursery.cancel_scope)
            # serve() reports started only once the store is open, every actor restored and the port bound.
            await notifier.send("READY=1", f"STATUS={status_line(box)}")
            nursery.start_soon(notifier.report_status, box)
            nursery.start_soon(_collect_garbage)
    return 0 if state.forced_by is None else 128 + state.forced_by


#: How often the only full garbage collection runs (see _collect_garbage).
GC_INTERVAL = 300.0
#: CPython's young generations as usual; the oldest one never collected automatically.
GC_THRESHOLDS = (700, 10, 1_000_000_000)


async def _collect_garbage() -> None:
    """Own the process's full garbage collections: here, every GC_INTERVAL, never automatically.

    With 10,000 workspace actors the heap holds 0.5-1 M tracked objects; CPython's automatic full collection
    then stalls the loop for 0.1-1 s every few seconds under heartbeat load. Young generations still collect
    as usual; each collection here is followed by ``gc.freeze()``, so the next one only walks what was
    allocated since. Process-wide, hence here in ``run`` and not in ``open_box`` (tests run boxes in-process).

    The thresholds are set before the store opens, so the restore runs without automatic full collections too:
    with them, the heap's growth to 50,000 actors set off one after another, and the restore of 50,000 took
    3.4-3.7 s against 1.8-1.9 s without (bench/README.md, "Fourth round"). The first collection here runs
    right after the restore.
    """
    while True:
        began = time.perf_counter()
        gc.collect()
        gc.freeze()
        log.info("full garbage collection took %.3fs (%d objects frozen)", time.perf_counter() - began,
                 gc.get_freeze_count())
        await trio.sleep(GC_INTERVAL)


async def _serve_then_stop(settings: Settings, state: _Lifecycle, scope: trio.CancelScope,
                           task_status: trio.TaskStatus[Box] = trio.TASK_STATUS_IGNORED) -> None:
    from ..box import serve

    def ready(box: Box) -> None:
        state.box = box  # before started(): a signal from now on drains instead of aborting start-up

    await serve(settings, task_status=task_status, on_ready=ready)
    scope.cancel()  # the server finished its graceful stop: end the signal watcher, watchdog and reporter too


async def _signals(state: _Lifecycle, notifier: Notifier, scope: trio.CancelScope,
                   task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """First signal: drain (or, during start-up, abandon it); second signal: cancel everything now."""
    from ..ops.notify import stopping_line

    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        task_status.started()
        async for signum in signals:
            name = signal.Signals(signum).name
            box = state.box
            if box is None:
                log.info("%s during start-up: stopping", name)
                await notifier.stopping("stopping: interrupted during start-up")
                scope.cancel()
                return
            if not box.shutdown_requested.is_set():
                log.info("%s: finishing in-flight requests (up to %gs), then stopping (again to exit at once)",
                         name, box.settings.shutdown_grace_seconds)
                await notifier.stopping(stopping_line(box))
                box.shutdown_requested.set()
                continue
            log.warning("second signal (%s): exiting now", name)
            state.forced_by = signum
            scope.cancel()
            return


@click.command("config")
@click.option("--markdown", is_flag=True, help="Print the table of docs/configuration.md instead.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def show_config(markdown: bool, as_json: bool) -> None:
    """List every setting (the box's, then each installed backend's) with its default and meaning."""
    from ..backends.options import shown_default
    from ..config import markdown_table, section_title, sections

    if as_json:
        click.echo(json.dumps([{"env": s.env, "default": shown_default(s) or None, "help": s.help,
                                "backend": backend} for backend, rows in sections() for s in rows], indent=2))
        return
    if markdown:
        click.echo(markdown_table())
        return
    for backend, rows in sections():
        click.echo(f"# {section_title(backend)}")
        for setting in rows:
            default = shown_default(setting)
            click.echo(f"{setting.env}{f' (default: {default})' if default else ''}\n    {setting.help}")

