"""Logging: one line per event; JSON when not on a terminal (journald, files), readable on a terminal."""

from __future__ import annotations

import json
import logging
import sys
import time


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def setup(level: str = "info", *, stream: object = None) -> None:
    stream = stream or sys.stderr
    handler = logging.StreamHandler(stream)  # type: ignore[arg-type]
    if getattr(stream, "isatty", lambda: False)():
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S"))
    else:
        handler.setFormatter(JSONFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("hypercorn.error", "hypercorn.access", "quart.app", "quart.serving"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
