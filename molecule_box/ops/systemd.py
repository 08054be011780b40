"""The systemd unit and env file, rendered from code, and ``molecule-box systemd install``.

Why rendered rather than copied from ``systemd/``: the checked-in files are not
part of an installed wheel, and the env file must list every setting of
:func:`molecule_box.config.sections` without drifting from it. The files in
``systemd/`` are this module's output (a test compares them), regenerated with
``molecule-box systemd unit`` and ``molecule-box systemd env-example``.
"""

from __future__ import annotations

import dataclasses
import grp
import os
import pwd
import secrets
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

from ..backends.options import shown_default
from ..config import section_title, sections
from .fsutil import atomic_write

SERVICE = "molecule-box"
USER = "molecule-box"
UNIT_DIR = Path("/etc/systemd/system")
ENV_DIR = Path("/etc/molecule-box")
ENV_NAME = "molecule-box.env"
#: The path the checked-in unit names; ``systemd install`` writes the real one.
DEFAULT_EXEC = "/usr/local/bin/molecule-box"
#: Seconds systemd waits for a stop before SIGKILL: above the default shutdown grace (20 s) plus the store's close.
TIMEOUT_STOP_SEC = 45
WATCHDOG_SEC = 30
#: The box's own cgroup caps (workspace containers are Docker's, outside them): far above what one box
#: uses (a few hundred MiB, a few dozen threads), so only a leak or a flood reaches them, and then the box
#: alone is stopped and restarted, not the host.
MEMORY_MAX = "2G"
TASKS_MAX = 512


def render_unit(*, exec_start: str = DEFAULT_EXEC, env_file: Path = ENV_DIR / ENV_NAME,
                docker_group: bool = True) -> str:
    """The service unit. ``docker_group=False`` leaves out ``SupplementaryGroups=docker`` (no such group: the
    unit would fail)."""
    groups = "SupplementaryGroups=docker\n" if docker_group else (
        "# No docker group on this host when installed: "
        "rerun `molecule-box systemd install` after installing Docker.\n")
    return f"""\
# molecule-box: AI-agent workspaces on one box (docs/operations.md).
# Written by `molecule-box systemd install`, which puts the real path of the console script in ExecStart=.
# Local changes belong in a drop-in (systemctl edit molecule-box), not here: install rewrites this file.

[Unit]
Description=molecule-box workspace server
After=network-online.target docker.service
Wants=network-online.target
# Restart=on-failure gives up after 5 failed starts within 5 minutes (a crash loop is not hidden).
StartLimitIntervalSec=300
StartLimitBurst=5

[Service]
# READY=1 is sent once the store is open, every workspace's actor is restored and the port is bound.
Type=notify
NotifyAccess=main
ExecStart={exec_start} run
EnvironmentFile=-{env_file}
Environment=PYTHONUNBUFFERED=1
User={USER}
{groups}# /var/lib/molecule-box, owned by the service user; the box finds it through $STATE_DIRECTORY.
StateDirectory=molecule-box
StateDirectoryMode=0700
# The box pings the watchdog from its event loop every {WATCHDOG_SEC // 2}s: a wedged loop is killed and restarted.
WatchdogSec={WATCHDOG_SEC}s
Restart=on-failure
RestartSec=2s
TimeoutStartSec=120s
# SIGTERM to the box only; it finishes in-flight requests for MOLECULE_BOX_SHUTDOWN_GRACE (default 20 s),
# then closes the store. Raise TimeoutStopSec with the grace: it must stay above it.
KillMode=mixed
TimeoutStopSec={TIMEOUT_STOP_SEC}s
LimitNOFILE=65536
# Caps of the box itself (not of workspace containers, which Docker runs outside this unit): a leak or a
# flood ends the box (and Restart=on-failure brings it back) instead of the host. Raise them in a drop-in.
MemoryMax={MEMORY_MAX}
TasksMax={TASKS_MAX}

# Hardening (score it with: systemd-analyze security molecule-box). The Docker socket, when the docker
# backend uses it, is root-equivalent whatever the sandbox says: see docs/operations.md.
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
ProtectProc=invisible
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
RemoveIPC=yes
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallErrorNumber=EPERM
CapabilityBoundingSet=
AmbientCapabilities=
UMask=0077

[Install]
WantedBy=multi-user.target
"""


def render_env_example(*, admin_token: str | None = None) -> str:
    """The env file: every setting (the box's, then each installed backend's), commented out at its default,
    with its help text.

    ``admin_token`` (given by ``systemd install``) is written uncommented, so the
    box never has to generate one and print it where the journal keeps it.
    """
    out = [
        "# molecule-box settings, read by systemd (EnvironmentFile=) and by `molecule-box run --env-file FILE`.",
        "# Every setting is listed at its default; uncomment a line to change it. KEY=VALUE, no spaces around =.",
        "# Generated from the settings of the box and its backends (`molecule-box systemd env-example`); `doctor`",
        "# checks the result. Keep this file mode 0600: it may hold the admin token and the secrets key.",
        "#",
        f"# The unit caps the box's memory (MemoryMax={MEMORY_MAX}) and its threads and processes",
        f"# (TasksMax={TASKS_MAX}); workspace containers are outside these caps. They are systemd settings, not",
        "# the box's: change them in a drop-in (systemctl edit molecule-box), not in this file.",
    ]
    for backend, rows in sections():
        if backend is not None:
            out += ["", f"# -- {section_title(backend)} --"]
        for setting in rows:
            out.append("")
            out.extend(textwrap.wrap(setting.help, 100, initial_indent="# ", subsequent_indent="# "))
            if setting.env == "ADMIN_TOKEN" and admin_token is not None:
                out.append(f"{setting.env}={admin_token}")
            else:
                out.append(f"#{setting.env}={shown_default(setting)}")
    return "\n".join(out) + "\n"


def console_script() -> str:
    """The installed ``molecule-box`` script beside this interpreter, else on PATH, else ``python -m molecule_box``."""
    beside = Path(sys.executable).parent / "molecule-box"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("molecule-box")
    if found and "/shims/" not in found:  # a pyenv/asdf shim depends on the caller's shell setup
        return str(Path(found).absolute())
    return f"{sys.executable} -m molecule_box"


@dataclasses.dataclass
class InstallReport:
    """What ``install`` did (or, with ``dry_run``, would do), in order, for printing."""

    actions: list[str] = dataclasses.field(default_factory=list)
    warnings: list[str] = dataclasses.field(default_factory=list)
    unit_text: str = ""


def _group_exists(name: str) -> bool:
    try:
        grp.getgrnam(name)
        return True
    except KeyError:
        return False


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def install(*, unit_dir: Path = UNIT_DIR, env_dir: Path = ENV_DIR, dry_run: bool = False, create_user: bool = True,
            exec_start: str | None = None, run: Callable[[list[str]], None] | None = None) -> InstallReport:
    """Write the unit (always) and the env file (only if absent), create the service user; ``dry_run`` changes nothing.

    ``run`` executes ``useradd``/``usermod`` (tests pass a recorder).
    """
    execute: Callable[[list[str]], object] = run or (lambda argv: subprocess.run(argv, check=True, timeout=60))
    report = InstallReport()
    exec_start = exec_start or console_script()
    docker_group = _group_exists("docker")
    env_file = Path(env_dir) / ENV_NAME
    unit_path = Path(unit_dir) / f"{SERVICE}.service"
    report.unit_text = render_unit(exec_start=exec_start, env_file=env_file, docker_group=docker_group)
    would = "would " if dry_run else ""

    script = exec_start.split()[0]
    if any(script.startswith(p) for p in ("/root/", "/home/", "/run/user/")):
        report.warnings.append(
            f"{script} is under a home directory, which the service cannot see (ProtectHome=yes, user {USER}); "
            "install molecule-box into a system location, e.g. python3 -m venv /opt/molecule-box && "
            "/opt/molecule-box/bin/pip install molecule-box, then rerun this command with that interpreter")
    if not docker_group:
        report.warnings.append("no group docker on this host: SupplementaryGroups=docker left out of the unit; "
                               "rerun `molecule-box systemd install` after installing Docker")

    if create_user:
        if _user_exists(USER):
            report.actions.append(f"system user {USER} exists")
        else:
            argv = ["useradd", "--system", "--user-group", "--no-create-home", "--home-dir", "/var/lib/molecule-box",
                    "--shell", "/usr/sbin/nologin", USER]
            report.actions.append(f"{would}create system user {USER}: {' '.join(argv)}")
            if not dry_run:
                execute(argv)
        if docker_group:
            members = grp.getgrnam("docker").gr_mem
            if USER in members:
                report.actions.append(f"{USER} is in group docker")
            else:
                argv = ["usermod", "--append", "--groups", "docker", USER]
                report.actions.append(f"{would}add {USER} to group docker: {' '.join(argv)}")
                if not dry_run:
                    execute(argv)

    old = unit_path.read_text() if unit_path.is_file() else None
    verb = "write" if old is None else ("keep unchanged" if old == report.unit_text else "update")
    report.actions.append(f"{would}{verb} {unit_path} (ExecStart={exec_start} run)")
    if not dry_run and old != report.unit_text:
        Path(unit_dir).mkdir(parents=True, exist_ok=True)
        atomic_write(unit_path, report.unit_text.encode(), mode=0o644)

    if env_file.exists():
        report.actions.append(f"keep {env_file} (an existing env file is never overwritten)")
    else:
        report.actions.append(f"{would}write {env_file} (mode 0600) listing every setting, with a new ADMIN_TOKEN")
        if not dry_run:
            Path(env_dir).mkdir(parents=True, exist_ok=True, mode=0o700)
            token = secrets.token_urlsafe(32)
            atomic_write(env_file, render_env_example(admin_token=token).encode(), mode=0o600, exclusive=True)
    return report


def installed_env_file() -> Path | None:
    """The service's env file, when ``systemd install`` ran here: what the box under systemd reads."""
    if not (UNIT_DIR / f"{SERVICE}.service").is_file():
        return None
    path = ENV_DIR / ENV_NAME
    return path if path.is_file() else None


def login_command(env_dir: Path = ENV_DIR) -> str:
    """How the operator gives the CLI the token ``install`` wrote (``molecule-box login`` keeps it for them)."""
    script = "molecule-box" if shutil.which("molecule-box") else console_script()
    return f"sudo grep ^ADMIN_TOKEN= {Path(env_dir) / ENV_NAME} | {script} login"


NEXT_STEPS = (
    "systemctl daemon-reload",
    f"systemctl enable --now {SERVICE}",
    f"systemctl status {SERVICE}",
)
