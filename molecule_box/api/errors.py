"""Exceptions become HTTP error responses in one place, :func:`molecule_box.asgi.error_response` (shared with
the A2A proxy, a peer of the API); the app reaches it here."""

from __future__ import annotations

from ..asgi import encode, error_response

__all__ = ["encode", "error_response"]
