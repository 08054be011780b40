"""Bearer tokens: 32 random bytes, URL-safe base64 (43 chars), stored only as sha256 plus an 8-char prefix.

The format is the platform's, so tokens minted here look like the ones agents
already handle. The plaintext exists only in the response that mints it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

PREFIX_LEN = 8


@dataclass(frozen=True)
class MintedToken:
    plaintext: str
    digest: bytes
    prefix: str


def hash_token(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def mint() -> MintedToken:
    plaintext = secrets.token_urlsafe(32)  # 32 bytes -> 43 characters, no padding
    return MintedToken(plaintext, hash_token(plaintext), plaintext[:PREFIX_LEN])


def parse_bearer(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header; anything else counts as no token."""
    if not header or not header.startswith("Bearer "):
        return None
    token = header[len("Bearer "):].strip()
    return token or None


def digest_matches(presented: str, digest: bytes) -> bool:
    """Constant-time check of a presented token against a stored digest."""
    return hmac.compare_digest(hash_token(presented), digest)
