"""The auth tiers of the API: :mod:`molecule_box.authz`, which the proxy (a peer of the API) shares."""

from __future__ import annotations

from ..authz import ADMIN, AUTH_TIERS, SYSTEM_PREFIXES, Principal, Tier, authorize, identify, scope_headers

__all__ = ["ADMIN", "AUTH_TIERS", "SYSTEM_PREFIXES", "Principal", "Tier", "authorize", "identify", "scope_headers"]
