"""The operator's commands: ``systemd install|unit|env-example``, ``backup``, ``restore``, ``doctor``.

Registered on the ``molecule-box`` group by :mod:`molecule_box.cli`. They read
the same settings as ``run`` (environment, then ``--env-file``). On a host
where ``systemd install`` was run they default to what the service uses: the
installed env file and ``/var/lib/molecule-box`` (its StateDirectory), so
``sudo molecule-box backup PATH`` backs up the service's store.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import click

from ..config import Settings
from ..errors import ConfigError
from ..ops import backup as backups
from ..ops import doctor as doctors
from ..ops import systemd

STATE_DIR = Path("/var/lib/molecule-box")

json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
env_file_option = click.option(
    "--env-file", type=click.Path(dir_okay=False, path_type=Path),
    help="KEY=VALUE file, as for `run`. Default, once `systemd install` ran: the service's env file.")


def _service_defaults(env_file: Path | None) -> tuple[dict[str, str], Path | None]:
    """The environment and env file the systemd service would see, when it is installed and nothing says otherwise."""
    environ = dict(os.environ)
    if not (systemd.UNIT_DIR / f"{systemd.SERVICE}.service").is_file():
        return environ, env_file
    installed = systemd.installed_env_file()
    if env_file is None and installed is not None:
        env_file = installed
        click.echo(f"(using the service's env file {installed})", err=True)
    if not environ.get("MOLECULE_BOX_DATA") and not environ.get("STATE_DIRECTORY"):
        environ["STATE_DIRECTORY"] = str(STATE_DIR)
    return environ, env_file


def _settings(env_file: Path | None) -> Settings:
    environ, env_file = _service_defaults(env_file)
    try:
        return Settings.from_env(environ, env_file=env_file)
    except ConfigError as exc:
        click.echo("molecule-box: invalid configuration (molecule-box doctor explains each problem):", err=True)
        for problem in exc.problems:
            click.echo(f"  - {problem}", err=True)
        sys.exit(2)


@click.group("systemd")
def systemd_group() -> None:
    """Run the box as a systemd service (docs/operations.md)."""


@systemd_group.command("install")
@click.option("--dry-run", is_flag=True, help="Print what would be done; change nothing.")
@click.option("--unit-dir", type=click.Path(file_okay=False, path_type=Path), default=systemd.UNIT_DIR,
              show_default=True)
@click.option("--env-dir", type=click.Path(file_okay=False, path_type=Path), default=systemd.ENV_DIR,
              show_default=True)
@click.option("--no-user", is_flag=True, help=f"Do not create the system user {systemd.USER}.")
@json_option
def install(dry_run: bool, unit_dir: Path, env_dir: Path, no_user: bool, as_json: bool) -> None:
    """Write the unit (with this installation's ExecStart) and the env file (never overwritten); create the user."""
    try:
        report = systemd.install(unit_dir=unit_dir, env_dir=env_dir, dry_run=dry_run, create_user=not no_user)
    except (OSError, subprocess.SubprocessError) as exc:  # useradd failing, a directory not writable
        click.echo(f"molecule-box systemd install: {exc}", err=True)
        if isinstance(exc, PermissionError) or (hasattr(os, "geteuid") and os.geteuid() != 0):
            click.echo("  (run it as root: sudo molecule-box systemd install)", err=True)
        sys.exit(1)
    if as_json:
        click.echo(json.dumps({"dry_run": dry_run, "actions": report.actions, "warnings": report.warnings,
                               "unit": report.unit_text, "next_steps": list(systemd.NEXT_STEPS),
                               "login": systemd.login_command(env_dir)}, indent=2))
        return
    if dry_run:
        click.echo("dry run: nothing was changed.\n")
    for action in report.actions:
        click.echo(f"- {action}")
    for warning in report.warnings:
        click.echo(f"warning: {warning}", err=True)
    if dry_run:
        click.echo(f"\nThe unit:\n\n{report.unit_text}")
    click.echo("\nThen:\n" + "".join(f"  {command}\n" for command in systemd.NEXT_STEPS), nl=False)
    click.echo("\nAnd give the admin token to the CLI (run it as the user who will use the CLI):\n"
               f"  {systemd.login_command(env_dir)}")


@systemd_group.command("unit")
@click.option("--exec-start", default=systemd.DEFAULT_EXEC, show_default=True, help="Path of the console script.")
def unit(exec_start: str) -> None:
    """Print the service unit (systemd/molecule-box.service is this output)."""
    click.echo(systemd.render_unit(exec_start=exec_start), nl=False)


@systemd_group.command("env-example")
def env_example() -> None:
    """Print the env file listing every setting (systemd/molecule-box.env.example is this output)."""
    click.echo(systemd.render_env_example(), nl=False)


@click.command("backup")
@click.argument("path", type=click.Path(file_okay=False, path_type=Path))
@env_file_option
@json_option
def backup(path: Path, env_file: Path | None, as_json: bool) -> None:
    """Copy the store and its secrets key into the new directory PATH; safe while the box runs.

    PATH gets molecule-box.db, secrets.key (mode 0600, when the box uses a key file) and manifest.json.
    """
    settings = _settings(env_file)
    try:
        manifest = backups.backup(settings, path)
    except backups.BackupError as exc:
        click.echo(f"molecule-box backup: {exc}", err=True)
        sys.exit(1)
    if as_json:
        click.echo(json.dumps({"path": str(Path(path).absolute()), "store": str(settings.store_path),
                               "manifest": manifest}, indent=2))
        return
    key = {"included": "secrets.key included",
           "environment": "secrets key NOT included: it is SECRETS_ENCRYPTION_KEY in the environment; keep it too",
           "absent": "no secrets key yet"}[manifest["secrets_key"]]
    click.echo(f"backed up {settings.store_path} to {Path(path).absolute()}: schema version "
               f"{manifest['schema_version']}, {manifest['workspaces']} workspaces, integrity ok; {key}")


@click.command("restore")
@click.argument("path", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Replace an existing store and key (they are kept beside, renamed).")
@env_file_option
@json_option
def restore(path: Path, force: bool, env_file: Path | None, as_json: bool) -> None:
    """Put backup PATH back as the store of a stopped box (checked first: checksums, integrity, schema)."""
    settings = _settings(env_file)
    try:
        report = backups.restore(settings, path, force=force)
    except backups.BackupError as exc:
        click.echo(f"molecule-box restore: {exc}", err=True)
        sys.exit(1)
    except ConfigError as exc:
        for problem in exc.problems:
            click.echo(f"molecule-box restore: refused: {problem}", err=True)
        sys.exit(1)
    manifest = report.manifest
    if as_json:
        click.echo(json.dumps({"data_dir": str(settings.data_dir), "manifest": manifest,
                               "kept_aside": [str(p) for p in report.kept_aside], "notes": list(report.notes)},
                              indent=2))
        return
    click.echo(f"restored the backup of {manifest['created_at']} (molecule-box {manifest['box_version']}, schema "
               f"version {manifest['schema_version']}, {manifest['workspaces']} workspaces) into {settings.data_dir}")
    for path_ in report.kept_aside:
        click.echo(f"  kept the replaced {path_}")
    for note in report.notes:
        click.echo(f"  note: {note}")
    click.echo("start the box: systemctl start molecule-box (or molecule-box run)")


@click.command("doctor")
@env_file_option
@json_option
def doctor(env_file: Path | None, as_json: bool) -> None:
    """Check configuration, data dir, store, secrets key, port, Docker and backends; explain each fix.

    Exit status 1 when any check fails (warnings alone exit 0).
    """
    environ, env_file = _service_defaults(env_file)
    findings = doctors.diagnose(env_file, environ)
    failed = any(f.status == "fail" for f in findings)
    if as_json:
        click.echo(json.dumps({"ok": not failed, "checks": [dataclasses.asdict(f) for f in findings]}, indent=2))
    else:
        click.echo(doctors.render(findings))
    sys.exit(1 if failed else 0)


def register(group: click.Group) -> None:
    """Add these commands to the ``molecule-box`` group."""
    for command in (systemd_group, backup, restore, doctor):
        group.add_command(command)
