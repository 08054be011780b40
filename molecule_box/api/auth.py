"""The auth tiers of the API: :mod:`molecule_box.authz`, which the proxy (a peer of the API) shares."""

from __future__ import annotations

from ..access import SYSTEM_PREFIXES
from ..asgi import scope_headers
from ..authz import ADMIN, AUTH_TIERS, Principal, Tier, authorize, identify

__all__ = ["ADMIN", "AUTH_TIERS", "SYSTEM_PREFIXES", "Principal", "Tier", "authorize", "identify", "scope_headers"]
