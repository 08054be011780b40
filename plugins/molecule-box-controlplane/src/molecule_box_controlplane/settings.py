"""The control-plane backend's settings: the variables the platform's tenant side reads, with its fallbacks."""

from __future__ import annotations

import dataclasses

from molecule_box.backends.base import BackendSettings, option
from molecule_box.backends.options import positive_float, text

DEFAULT_CP_URL = "https://api.moleculesai.app"


def _url(raw: str) -> str:
    value = raw.strip().rstrip("/")
    if not value.startswith(("http://", "https://")):
        raise ValueError("must be an http:// or https:// URL")
    return value


@dataclasses.dataclass(frozen=True)
class ControlPlaneSettings(BackendSettings):
    provision_url: str | None = option(
        "CP_PROVISION_URL", _url, None,
        "Base URL of the Molecule control plane; wins over MOLECULE_CP_URL.")
    cp_url: str = option(
        "MOLECULE_CP_URL", _url, DEFAULT_CP_URL,
        "Base URL of the Molecule control plane when CP_PROVISION_URL is unset.")
    org_id: str | None = option(
        "MOLECULE_ORG_ID", text, None,
        "The org this box is the tenant of (the same variable that makes controlplane the default backend), sent "
        "as org_id with every provision.")
    shared_secret: str | None = option(
        "MOLECULE_CP_SHARED_SECRET", text, None,
        "Bearer token on /cp/workspaces/* calls (falls back to PROVISION_SHARED_SECRET; unset: no header).")
    provision_shared_secret: str | None = option(
        "PROVISION_SHARED_SECRET", text, None,
        "Older name of MOLECULE_CP_SHARED_SECRET, read when that is unset.")
    admin_api_token: str | None = option(
        "CP_ADMIN_API_TOKEN", text, None,
        "Bearer token on /cp/admin/* calls (console output, instance listing); falls back to the shared secret.")
    tenant_admin_token: str | None = option(
        "ADMIN_TOKEN", text, None,
        "The box's own admin token (the same variable), sent as X-Molecule-Admin-Token on every control-plane "
        "call: the tenant's identity, which the control plane also presents when it posts bootstrap-failed back. "
        "Unset: the header is omitted.")
    http_timeout: float = option(
        "CP_HTTP_TIMEOUT", positive_float, 120.0,
        "Seconds one control-plane call may take (connect to last byte); a slower answer counts as an outage.")
    deprovision_timeout: float = option(
        "CP_DEPROVISION_TIMEOUT", positive_float, 180.0,
        "Seconds a deprovision may take until the instance reads terminated, DELETE retried meanwhile; past it "
        "the stop or delete is reported failed (a delete is then retried by the box).")
    watch_interval: float = option(
        "CP_WATCH_INTERVAL", positive_float, 30.0,
        "Seconds between status checks of the instances this box runs (a terminated one is reported as exited).")

    @property
    def base_url(self) -> str:
        return self.provision_url or self.cp_url

    @property
    def bearer(self) -> str | None:
        return self.shared_secret or self.provision_shared_secret

    @property
    def admin_bearer(self) -> str | None:
        return self.admin_api_token or self.bearer

    def missing(self) -> list[str]:
        """What the platform's control plane needs from its tenant: the org, the shared secret of
        ``/cp/workspaces/*`` and the admin token it knows the tenant by (without it the header is omitted)."""
        wanted = (("MOLECULE_ORG_ID", self.org_id), ("MOLECULE_CP_SHARED_SECRET", self.bearer),
                  ("ADMIN_TOKEN", self.tenant_admin_token))
        return [env for env, value in wanted if not value]

    def __repr__(self) -> str:  # never print tokens
        return f"ControlPlaneSettings(base_url={self.base_url!r})"
