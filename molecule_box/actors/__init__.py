"""Workspace actors and their supervisor."""

from .supervisor import Supervisor
from .workspace import WorkspaceActor

__all__ = ["Supervisor", "WorkspaceActor"]
