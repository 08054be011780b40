"""Log format: JSON off a terminal and under journald, readable on a terminal; workspace_id carried; no bearer."""

from __future__ import annotations

import io
import json
import logging

import pytest

from molecule_box.ops import logs


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def restore_logging():  # type: ignore[no-untyped-def]
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_format_choice() -> None:
    assert logs.wants_json(io.StringIO(), {}) is True
    assert logs.wants_json(Terminal(), {}) is False
    assert logs.wants_json(Terminal(), {"JOURNAL_STREAM": "8:12345"}) is True


def test_json_lines_carry_workspace_id_and_hide_bearer_tokens(restore_logging: None) -> None:
    out = io.StringIO()
    logs.setup("info", stream=out, environ={})
    log = logging.getLogger("molecule_box.test")
    log.info("workspace went %s", "offline", extra={"workspace_id": "ws-1"})
    log.warning("proxy said Authorization: Bearer abcdefghijklmnop0123")
    first, second = (json.loads(line) for line in out.getvalue().splitlines())
    assert first["workspace_id"] == "ws-1" and first["msg"] == "workspace went offline"
    assert first["level"] == "info" and first["logger"] == "molecule_box.test"
    assert "workspace_id" not in second
    assert "abcdefghijklmnop0123" not in second["msg"] and "Bearer <redacted>" in second["msg"]


def test_terminal_lines_are_readable(restore_logging: None) -> None:
    out = Terminal()
    logs.setup("info", stream=out, environ={})
    logging.getLogger("molecule_box.test").info("started", extra={"workspace_id": "ws-2"})
    line = out.getvalue().strip()
    assert "INFO" in line and "molecule_box.test: started" in line and "workspace_id=ws-2" in line
    assert not line.startswith("{")
