"""The flyio backend's settings, read by the box with its own (``molecule-box config`` lists them)."""

from __future__ import annotations

import dataclasses

from molecule_box.backends.base import BackendSettings, option
from molecule_box.backends.options import positive_float, text

#: The public Machines API; inside Fly's private network ``http://_api.internal:4280/v1`` also answers.
PUBLIC_API = "https://api.machines.dev/v1"


def region(raw: str) -> str:
    value = raw.strip().lower()
    if not (2 <= len(value) <= 8 and value.isalnum()):
        raise ValueError("must be a Fly region code such as ord or ams")
    return value


def base_url(raw: str) -> str:
    value = raw.strip().rstrip("/")
    if not value.startswith(("http://", "https://")):
        raise ValueError("must be an http:// or https:// URL such as https://api.machines.dev/v1")
    return value


@dataclasses.dataclass(frozen=True)
class FlySettings(BackendSettings):
    api_token: str = option(
        "FLY_API_TOKEN", text, "",
        "Fly API token (`fly tokens create deploy`). A token starting with `FlyV1 ` is sent as it is, any other "
        "as `Bearer`. Never logged. Required for flyio workspaces.")
    app: str = option(
        "FLY_WORKSPACE_APP", text, "",
        "The Fly app (created beforehand) whose Machines run the workspaces. Required for flyio workspaces.")
    region: str = option(
        "FLY_REGION", region, "ord",
        "Region of a new Machine when the workspace's create body has no `metadata.region`.")
    api_base_url: str = option(
        "FLY_API_BASE_URL", base_url, PUBLIC_API,
        "Base URL of the Machines API, `/v1` included (point it at `python -m molecule_box_fly.emulator` to test).")
    image_prefix: str = option(
        "FLY_IMAGE_PREFIX", text, "ghcr.io/molecule-ai/workspace-",
        "A workspace of runtime R runs the image `<prefix>R:latest`.")
    request_timeout: float = option(
        "FLY_REQUEST_TIMEOUT", positive_float, 15.0,
        "Seconds one Machines API call may take (a `/wait` long-poll gets its own wait on top).")
    watch_interval: float = option(
        "FLY_WATCH_INTERVAL", positive_float, 30.0,
        "Seconds between two looks at this box's Machines (one list call): a Machine that stopped on its own "
        "(its restart policy gave up) is reported as exited, so the box's restart policy applies.")

    def missing(self) -> list[str]:
        """What a flyio workspace cannot do without (``admit`` refuses a create while one is unset)."""
        return [env for env, value in (("FLY_API_TOKEN", self.api_token), ("FLY_WORKSPACE_APP", self.app))
                if not value]
