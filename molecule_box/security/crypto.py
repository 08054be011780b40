"""Secrets at rest: AES-256-GCM, 12-byte random nonce, stored as nonce || ciphertext || tag.

Version 1 rows are the platform's format (no associated data). The box writes
version 2, which binds each ciphertext to its row (scope, workspace, key) as
associated data, so a ciphertext copied onto another row or workspace fails to
decrypt instead of leaking into the wrong agent's environment.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ..config import Settings, parse_encryption_key
from ..errors import ConfigError, MoleculeBoxError

KEY_FILE = "secrets.key"
CURRENT_VERSION = 2


class DecryptError(MoleculeBoxError):
    """A stored secret could not be decrypted (wrong key, tampered row, unknown version)."""


def secret_aad(workspace_id: str | None, key: str) -> bytes:
    return f"{'workspace:' + workspace_id if workspace_id else 'global'}\x00{key}".encode()


class SecretBox:
    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("AES-256 needs a 32-byte key")
        self._aead = AESGCM(key)

    def encrypt(self, plaintext: str, aad: bytes) -> bytes:
        nonce = os.urandom(12)
        return nonce + self._aead.encrypt(nonce, plaintext.encode(), aad)

    def decrypt(self, blob: bytes, version: int, aad: bytes) -> str:
        if version == 0:
            # Plaintext rows (the platform's without a key) are encrypted at start (Vault.seal_plaintext):
            # one that appears later was written behind the box's back and is not served.
            raise DecryptError("plaintext secret row (version 0) after start; set the secret again")
        if version not in (1, 2) or len(blob) < 12 + 16:
            raise DecryptError(f"unsupported secret encoding version {version}")
        try:
            plain = self._aead.decrypt(bytes(blob[:12]), bytes(blob[12:]), aad if version == 2 else None)
        except InvalidTag:
            raise DecryptError("secret does not decrypt with the configured key") from None
        return plain.decode()


def load_key(settings: Settings) -> bytes:
    """``SECRETS_ENCRYPTION_KEY`` if set, else the data dir's key file, created (mode 0600) on first start."""
    if settings.secrets_encryption_key is not None:
        return settings.secrets_encryption_key
    path = Path(settings.data_dir) / KEY_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            raise ConfigError(
                [f"{path}: secrets key file is readable by others (mode {mode:o}); chmod 600 it"]) from None
        try:
            return parse_encryption_key(path.read_text())
        except ValueError as exc:
            raise ConfigError([f"{path}: {exc}"]) from None
    with os.fdopen(fd, "w") as handle:
        handle.write(base64.b64encode(os.urandom(32)).decode() + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    return parse_encryption_key(path.read_text())
