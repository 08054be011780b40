"""Plugin source strings (``local://name``, ``github://owner/repo#ref``): parsing, names and pinning.

Everything here runs before anything is fetched, so a malformed source is a 400 and an unpinned github source
a 422 without a byte of network traffic (the platform let malformed specs through to the resolver and answered
502). Error bodies never carry a resolver's or git's own text.
"""

from __future__ import annotations

import dataclasses
import posixpath
import re

from ..errors import BadRequest, UnprocessableEntity

#: The schemes the box resolves, sorted (``GET /plugins/sources``).
SCHEMES = ("github", "local")
_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+\-.]*)://(.*)$", re.DOTALL)
_LOCAL_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,127}$")
# A ref may not start with '-' (git would read it as an option).
_GITHUB = re.compile(r"^([a-zA-Z0-9][a-zA-Z0-9_.\-]{0,99})/([a-zA-Z0-9][a-zA-Z0-9_.\-]{0,99})"
                     r"(?:#([a-zA-Z0-9_.][a-zA-Z0-9_./\-]{0,254}))?$")
REQUIRED = "'source' is required (e.g. \"local://my-plugin\" or \"github://owner/repo#v1.0.0\")"


@dataclasses.dataclass(frozen=True)
class Source:
    """A parsed source. ``name`` is the plugin's name as the resolver will stage it: the local directory, or the
    github repository; ``ref`` the github pin (a tag, a branch or a commit SHA)."""

    scheme: str
    spec: str
    name: str
    owner: str | None = None
    ref: str | None = None

    @property
    def raw(self) -> str:
        return f"{self.scheme}://{self.spec}"


def valid_name(name: str) -> bool:
    """The platform's rule for any plugin name (path parameter, resolver output, allowlist entry)."""
    return bool(name) and "/" not in name and "\\" not in name and ".." not in name and posixpath.basename(
        name) == name


def valid_local_name(name: str) -> bool:
    return valid_name(name) and _LOCAL_NAME.match(name) is not None


def check_name(name: str) -> str:
    if not valid_name(name):
        raise BadRequest("invalid plugin name")
    return name


def parse(text: str | None, *, allow_unpinned: bool = False) -> Source:
    """The source ``text`` names, or the refusal the platform's pipeline gives it (steps 1-5): 400 for an empty,
    malformed or unknown source and for an invalid name, 422 for an unpinned github source."""
    text = (text or "").strip()
    if not text:
        raise BadRequest(REQUIRED)
    match = _SCHEME.match(text)
    scheme, spec = (match.group(1).lower(), match.group(2)) if match else ("local", text)
    if not spec:
        raise BadRequest("invalid plugin source")
    if scheme not in SCHEMES:
        raise BadRequest("failed to resolve plugin source", available_schemes=list(SCHEMES))
    if scheme == "local":
        if not valid_local_name(spec):
            raise BadRequest("invalid plugin name")
        return Source("local", spec, spec)
    found = _GITHUB.match(spec)
    if found is None:
        raise BadRequest("invalid plugin source", source=f"{scheme}://{spec}")
    owner, repo, ref = found.groups()
    if not valid_name(repo):
        raise BadRequest("invalid plugin name", source=f"{scheme}://{spec}")
    if ref is None and "#" not in spec and not allow_unpinned:
        raise UnprocessableEntity(
            "unpinned github source: append a tag, branch or commit SHA (e.g. \"github://owner/repo#v1.2.0\"). "
            "Set PLUGIN_ALLOW_UNPINNED=true to override", source=f"{scheme}://{spec}")
    return Source("github", spec, repo, owner, ref)
