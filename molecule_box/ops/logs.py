"""Logging: one line per event; JSON for machines (journald, files), readable on a terminal.

JSON is used whenever stderr is not a terminal, and always under systemd
(``JOURNAL_STREAM`` set), so journald and log shippers get fields rather than
prose. A record about one workspace carries ``workspace_id``
(``log.info(..., extra={"workspace_id": wid})``), so one agent's history is a
filter away. Tokens and secret values are never passed to a logger; as a last
guard, anything shaped like an ``Authorization: Bearer`` credential is masked
in the formatted line.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from collections.abc import Mapping
from typing import Any

#: Record attributes copied into the JSON line when a caller passes them in ``extra``.
CONTEXT_FIELDS = ("workspace_id", "backend", "request_id")

_BEARER = re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]{8,}")


def _redact(text: str) -> str:
    return _BEARER.sub(r"\1<redacted>", text) if "earer" in text else text


class JSONFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, any context fields, exc."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": _redact(record.getMessage()),
        }
        for field in CONTEXT_FIELDS:
            value = getattr(record, field, None)
            if value is not None:
                entry[field] = value
        if record.exc_info:
            entry["exc"] = _redact(self.formatException(record.exc_info))
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    """The terminal format, with the context fields appended as ``key=value``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        context = " ".join(f"{f}={getattr(record, f)}" for f in CONTEXT_FIELDS if getattr(record, f, None) is not None)
        return _redact(f"{line} [{context}]" if context else line)


def wants_json(stream: object, environ: Mapping[str, str] | None = None) -> bool:
    """JSON unless ``stream`` is a terminal; always JSON under systemd's journal."""
    environ = os.environ if environ is None else environ
    if environ.get("JOURNAL_STREAM"):
        return True
    return not getattr(stream, "isatty", lambda: False)()


def setup(level: str = "info", *, stream: object = None, environ: Mapping[str, str] | None = None) -> None:
    stream = stream or sys.stderr
    handler = logging.StreamHandler(stream)  # type: ignore[arg-type]
    handler.setFormatter(JSONFormatter() if wants_json(stream, environ) else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("hypercorn.error", "hypercorn.access", "quart.app", "quart.serving"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
