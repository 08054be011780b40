"""SQLite state: one file, WAL, versioned migrations, one writer with group commit."""

from .db import Store, Write

__all__ = ["Store", "Write"]
