"""Browser tests of the dashboard: Playwright's sync API driving Debian's chromium against a real box.

The box runs as its own process (``python -m molecule_box run``) on 127.0.0.1 with a fresh data directory,
so the browser's blocking calls never share a trio loop with the server. Playwright never downloads a browser
here: ``browser_type_launch_args`` points it at the system's chromium (``apt-get install chromium``; the tests
skip without it, except under CI=true, where they fail)."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import ConsoleMessage, Error, Page, Playwright, expect

from ..conftest import ADMIN, ADMIN_TOKEN

#: The external workspaces' heartbeat deadline in the boxes under test: short, so "offline" shows soon.
STALE_AFTER = "2"
SERVING = re.compile(r"serving on (http://127\.0\.0\.1:\d+)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "browser: drives a real browser (system chromium) against a real box")
    config.addinivalue_line("markers", "box_env(**settings): settings of the test's own box (fresh_box)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Browser tests run last: Playwright's sync API keeps an asyncio loop running in the main thread from
    its first test to the end of the session, and the suite's trio-asyncio tests cannot run beside it."""
    items.sort(key=lambda item: item.get_closest_marker("browser") is not None)


class DashBox:
    """A box process under test, and an admin client for setting the scene (as an operator's script would)."""

    def __init__(self, data_dir: Path, *, admin_token: str = ADMIN_TOKEN, **env: str) -> None:
        self.data_dir = data_dir
        self.env = env
        self.admin_token = admin_token
        self.log = data_dir / "box.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.api = httpx.Client()

    def start(self) -> None:
        env = {**os.environ, "CONTAINER_BACKEND": "external", "PORT": "0", "BIND_ADDR": "127.0.0.1",
               "MOLECULE_BOX_DATA": str(self.data_dir), "ADMIN_TOKEN": self.admin_token,
               "MOLECULE_BOX_ALLOW_AGENT_NETWORKS": "127.0.0.0/8", "MOLECULE_BOX_SHUTDOWN_GRACE": "2",
               "REMOTE_LIVENESS_STALE_AFTER": STALE_AFTER, "WORKSPACE_NETWORK": "host", "LOG_LEVEL": "info",
               **self.env}
        seen = self.log.stat().st_size if self.log.exists() else 0  # a restart appends to the same log
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "molecule_box", "run"], env=env,
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            found = SERVING.findall(self.log.read_bytes()[seen:].decode(errors="replace"))
            if found:
                self.url = found[-1]
                self.api = httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {self.admin_token}"},
                                        timeout=10)
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"the box did not start:\n{self.log.read_text(errors='replace')}")

    def stop(self) -> None:
        self.api.close()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def external(self, name: str, **fields: Any) -> tuple[str, str]:
        """A created external workspace: (id, its agent's token)."""
        response = self.api.post("/workspaces", json={"name": name, "external": True, **fields})
        assert response.status_code == 201, response.text
        body = response.json()
        return body["id"], body["connection"]["auth_token"]

    def heartbeat(self, wid: str, token: str, **fields: Any) -> None:
        """What the workspace's agent sends: a real heartbeat with its own token."""
        response = httpx.post(f"{self.url}/registry/heartbeat", json={"workspace_id": wid, **fields},
                              headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert response.status_code == 200, response.text


def _chromium() -> str:
    exe = os.environ.get("BOX_CHROMIUM") or shutil.which("chromium")
    if not exe:
        if os.environ.get("CI") == "true":
            pytest.fail("system chromium not installed (apt-get install chromium)")
        pytest.skip("system chromium not installed (apt-get install chromium)")
    return exe


@pytest.fixture(scope="session")
def _default_asyncio_policy() -> Iterator[None]:
    """The suite's docker tests leave trio-asyncio's event-loop policy installed, whose loops Playwright's
    sync API cannot run its own in: the default policy while the browser tests run."""
    before = asyncio.get_event_loop_policy()
    # An instance, not None: trio-asyncio patches asyncio so that None means its own policy.
    asyncio.set_event_loop_policy(asyncio.DefaultEventLoopPolicy())
    yield
    asyncio.set_event_loop_policy(before)


@pytest.fixture(scope="session")
def playwright(_default_asyncio_policy: None, playwright: Playwright) -> Playwright:
    return playwright


@pytest.fixture(scope="session")
def base_url() -> str | None:
    """Replaces pytest-base-url's (an instance-method fixture, which pytest 9 warns about): tests use full URLs."""
    return None


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict[str, Any],
                             tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    # Chromium writes crash reports and caches under $HOME: a throwaway one keeps the real home untouched.
    home = tmp_path_factory.mktemp("browser-home")
    return {**browser_type_launch_args, "executable_path": _chromium(),
            "env": {**os.environ, "HOME": str(home), "XDG_CONFIG_HOME": str(home), "XDG_CACHE_HOME": str(home)}}


@pytest.fixture(scope="session")
def dash(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DashBox]:
    _chromium()
    box = DashBox(tmp_path_factory.mktemp("dash-box"))
    box.start()
    yield box
    box.stop()


@pytest.fixture
def fresh_box(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DashBox]:
    """A box of the test's own, for tests that restart it or end every session; settings from the test's
    ``box_env`` marker."""
    _chromium()
    marker = request.node.get_closest_marker("box_env")
    box = DashBox(tmp_path / "box", **(marker.kwargs if marker else {}))
    box.data_dir.mkdir()
    box.start()
    yield box
    box.stop()


class Console:
    """Every console error and uncaught exception of the page; the test fails on any it did not expect."""

    def __init__(self, page: Page) -> None:
        self.errors: list[str] = []
        self.expected: list[re.Pattern[str]] = []
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.errors.append(f"uncaught: {exc}"))

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(message.text)

    def expect(self, pattern: str) -> None:
        """An error the test provokes on purpose (a refused login logs the refused request)."""
        self.expected.append(re.compile(pattern))

    def unexpected(self) -> list[str]:
        return [e for e in self.errors if not any(p.search(e) for p in self.expected)]


@pytest.fixture
def console(page: Page) -> Iterator[Console]:
    watcher = Console(page)
    yield watcher
    assert watcher.unexpected() == []


def login(page: Page, box: DashBox, token: str | None = None) -> None:
    page.goto(box.url + "/")
    page.get_by_label("Admin token").fill(token or box.admin_token)
    page.get_by_role("button", name="Log in").click()
    expect(page.locator("#conn")).to_have_attribute("data-state", "live")


def shot(page: Page, output_path: Path | str, name: str) -> Path:
    """A screenshot for the reviewer, in the test's output directory (pytest-playwright's --output)."""
    path = Path(output_path) / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path), full_page=True)
    return path


__all__ = ["ADMIN", "Console", "DashBox", "Error", "login", "shot"]
