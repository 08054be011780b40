"""The HTTP API: a raw ASGI front for hot routes in front of the quart-trio app."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, cast

from ..asgi import ASGIApp
from .app import create_app
from .hot import Front

if TYPE_CHECKING:
    from ..box import Box


def create_asgi(box: Box, hot: Mapping[tuple[str, str], ASGIApp] | None = None) -> Front:
    """The app behind its raw front; ``hot`` adds raw handlers by (method, path), e.g. the A2A proxy's."""
    # quart types its ASGI callable with hypercorn's typed dicts; the front passes plain ones through.
    return Front(box, cast(ASGIApp, create_app(box)), hot)


__all__ = ["create_app", "create_asgi"]
