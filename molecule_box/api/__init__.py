"""The HTTP API: a raw ASGI front for hot routes in front of the quart-trio app."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .app import create_app
from .hot import Front

if TYPE_CHECKING:
    from ..box import Box


def create_asgi(box: Box) -> Front:
    return Front(box, create_app(box))


__all__ = ["create_app", "create_asgi"]
