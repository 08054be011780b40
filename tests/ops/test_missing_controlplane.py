"""``MOLECULE_ORG_ID`` set and the control-plane plugin not installed: every refusal says to install
``molecule-box-controlplane`` or unset ``MOLECULE_ORG_ID`` (changing ``CONTAINER_BACKEND`` would not help).

The box runs in an interpreter that really lacks the plugin: this test environment has it installed, so the
box gets a site directory holding every installed distribution but that one (``python -S`` and
``site.addsitedir``, the way ``site`` itself adds site-packages), and its entry points are looked up as usual.
"""

from __future__ import annotations

import sys
import sysconfig
from pathlib import Path

import httpx
import trio

from .conftest import ADMIN, BoxProcess, free_port

HIDDEN = ("molecule_box_controlplane", "__editable__.molecule_box_controlplane",
          "__editable___molecule_box_controlplane")
FIX = "install molecule-box-controlplane (pip install molecule-box-controlplane), or unset MOLECULE_ORG_ID"


def site_without_controlplane(tmp_path: Path) -> list[str]:
    """The command line of a Python whose site-packages lacks the control-plane plugin (and nothing else)."""
    site = tmp_path / "site"
    site.mkdir()
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        if not entry.name.lower().startswith(HIDDEN):
            (site / entry.name).symlink_to(entry)
    boot = "import site, sys; site.addsitedir(sys.argv.pop(1)); from molecule_box.cli import main; main()"
    return [sys.executable, "-S", "-c", boot, str(site)]


async def test_create_and_doctor_say_how_to_get_the_control_plane(tmp_path: Path) -> None:
    python = site_without_controlplane(tmp_path)
    box = BoxProcess(tmp_path / "data", tmp_path / "box.log", MOLECULE_ORG_ID="org-1", CONTAINER_BACKEND="docker")
    box.command = [*python, "run"]
    try:
        await box.start()
        async with httpx.AsyncClient(base_url=box.url, timeout=10) as client:
            health = (await client.get("/health")).json()
            assert "controlplane" not in health["backends"], health
            answer = await client.post("/workspaces", json={"name": "w", "runtime": "langgraph"}, headers=ADMIN)
            assert answer.status_code == 400, answer.text
            body = answer.json()
            assert body["code"] == "backend_not_installed" and body["backend"] == "controlplane", body
            assert FIX in body["error"] and "CONTAINER_BACKEND" not in body["error"].split(FIX)[0], body
            # A remote agent needs no plugin: it is still created.
            remote = await client.post("/workspaces", json={"name": "r", "external": True}, headers=ADMIN)
            assert remote.status_code == 201, remote.text
    finally:
        await box.kill()
    assert FIX in box.log()  # the start's warning about the default backend says the same

    doctor = await trio.run_process([*python, "doctor", "--json"], env={**box.env, "PORT": str(free_port())},
                                    capture_stdout=True, capture_stderr=True, check=False)
    stdout = doctor.stdout.decode()
    assert '"controlplane: distribution' not in stdout, stdout
    assert "the default backend 'controlplane' is not installed" in stdout, stdout
    assert FIX in stdout
