"""Decrypting secrets for the one place each may go: its own workspace.

``/secrets/values`` (remote agents) and workload start (containers) both come
here, so the merge order (global, then workspace overrides) and the refusal
to hand out a partial bundle live in one spot.
"""

from __future__ import annotations

import logging
from typing import Any

from .errors import HTTPError
from .models import Workspace, rfc3339
from .security.crypto import CURRENT_VERSION, DecryptError, SecretBox, secret_aad
from .store import Store
from .store import secrets as secret_rows
from .store.db import Op

log = logging.getLogger(__name__)


class SecretsUndecryptable(HTTPError):
    status = 500

    def __init__(self, failed_keys: list[str]) -> None:
        super().__init__("some secrets do not decrypt with the configured key; none were returned",
                         failed_keys=failed_keys, code="secrets_undecryptable")


class Vault:
    def __init__(self, store: Store, cipher: SecretBox) -> None:
        self.store = store
        self.cipher = cipher

    def put(self, workspace_id: str | None, key: str, value: str) -> Op[None]:
        """The op that stores ``value`` encrypted, bound to its row. Encrypted now (on the loop, cheap) so the
        op in the writer thread only stores bytes."""
        return secret_rows.put(workspace_id, key, self.cipher.encrypt(value, secret_aad(workspace_id, key)),
                               CURRENT_VERSION)

    async def seal_plaintext(self) -> None:
        """Encrypt the plaintext (version-0) rows a store may carry from the platform, once, at start:
        after it no secret is ever read as plaintext (:meth:`SecretBox.decrypt` refuses version 0).

        A row that is not UTF-8 text was never readable as a secret: it is left as it is, and is refused like
        any row that does not decrypt."""
        plaintext = secret_rows.plaintext_rows(self.store.db)
        if not plaintext:
            return  # the usual start: no write, no commit
        rows = []
        for row in plaintext:
            value = row["value"]
            try:
                text = value if isinstance(value, str) else bytes(value).decode()
            except UnicodeDecodeError:
                log.warning("secret %r of %s is plaintext but not UTF-8 text: left unreadable; set it again",
                            row["key"], row["workspace_id"] or "the box (global)")
                continue
            aad = secret_aad(row["workspace_id"] or None, row["key"])
            rows.append((row["workspace_id"], row["key"], self.cipher.encrypt(text, aad)))
        sealed = await self.store.write(secret_rows.seal(rows, CURRENT_VERSION), bulk=True)
        if sealed:
            log.info("encrypted %d plaintext (version 0) secret rows", sealed)

    def values(self, workspace_id: str) -> dict[str, str]:
        """Global secrets overridden by the workspace's own; all or nothing."""
        merged: dict[str, str] = {}
        failed: list[str] = []
        for scope, owner in (("global", None), ("workspace", workspace_id)):
            for row in secret_rows.encrypted_rows(self.store.db, owner):
                try:
                    merged[row["key"]] = self.cipher.decrypt(row["value"], row["encryption_version"],
                                                          secret_aad(owner, row["key"]))
                except DecryptError:
                    failed.append(f"{scope}:{row['key']}")
        if failed:
            raise SecretsUndecryptable(failed)
        return merged

    def listing(self, workspace_id: str) -> list[dict[str, Any]]:
        """Keys only: the workspace's own first, then inherited globals it does not override."""
        own = secret_rows.listing(self.store.db, workspace_id)
        keys = {row["key"] for row in own}
        rows = [dict(row, scope="workspace") for row in own]
        rows += [dict(row, scope="global") for row in secret_rows.listing(self.store.db, None)
                 if row["key"] not in keys]
        return [{"key": r["key"], "has_value": True, "scope": r["scope"], "created_at": rfc3339(r["created_at"]),
                 "updated_at": rfc3339(r["updated_at"])} for r in rows]

    def workload_env(self, ws: Workspace, platform_url: str) -> dict[str, str]:
        """The environment of a box-started workload: its secrets plus the box's own variables."""
        env = self.values(ws.id)
        env.update(
            WORKSPACE_ID=ws.id,
            WORKSPACE_CONFIG_PATH="/configs",
            TIER=str(ws.tier),
            PLATFORM_URL=platform_url,
            MOLECULE_URL=platform_url,
        )
        if ws.role:
            env.setdefault("MOLECULE_AGENT_ROLE", ws.role)
        model = ws.config.get("model") if isinstance(ws.config, dict) else None
        if isinstance(model, str) and model:  # a MODEL_PROVIDER secret (PUT /model) wins over create's model
            env.setdefault("MODEL_PROVIDER", model)
            if ws.runtime == "hermes":
                env.setdefault("HERMES_DEFAULT_MODEL", model)
        return env
