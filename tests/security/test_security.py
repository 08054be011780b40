"""Tokens, secrets encryption and the SSRF policy."""

from __future__ import annotations

import ipaddress
import os
import stat
from pathlib import Path

import pytest

from molecule_box.config import Settings
from molecule_box.errors import ConfigError
from molecule_box.security import tokens as tk
from molecule_box.security.crypto import DecryptError, SecretBox, load_key, secret_aad
from molecule_box.security.ssrf import NO_INBOUND, UnsafeAgentURL, check_agent_url, ip_refusal

LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"),)


def test_token_format() -> None:
    token = tk.mint()
    assert len(token.plaintext) == 43 and token.prefix == token.plaintext[:8]
    assert set(token.plaintext) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    assert tk.digest_matches(token.plaintext, token.digest)
    assert not tk.digest_matches(token.plaintext + "x", token.digest)
    assert tk.parse_bearer("Bearer  abc ") == "abc"
    assert tk.parse_bearer("bearer abc") is None and tk.parse_bearer("Basic x") is None


def test_secret_box_binds_ciphertext_to_its_row() -> None:
    box = SecretBox(os.urandom(32))
    blob = box.encrypt("sk-live", secret_aad("ws-a", "KEY"))
    assert b"sk-live" not in blob
    assert box.decrypt(blob, 2, secret_aad("ws-a", "KEY")) == "sk-live"
    with pytest.raises(DecryptError):
        box.decrypt(blob, 2, secret_aad("ws-b", "KEY"))  # copied onto another workspace
    with pytest.raises(DecryptError):
        SecretBox(os.urandom(32)).decrypt(blob, 2, secret_aad("ws-a", "KEY"))  # wrong key
    with pytest.raises(DecryptError):
        box.decrypt(blob, 7, b"")


def test_key_file_generated_0600_and_checked(tmp_path: Path) -> None:
    settings = Settings.from_mapping({"MOLECULE_BOX_DATA": str(tmp_path)}, environ={})
    key = load_key(settings)
    path = tmp_path / "secrets.key"
    assert len(key) == 32 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_key(settings) == key
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_key(settings)


@pytest.mark.parametrize(("ip", "allowed", "ok"), [
    ("8.8.8.8", (), True),
    ("127.0.0.1", (), False),
    ("127.0.0.1", LOOPBACK, True),
    ("10.1.2.3", LOOPBACK, False),
    ("169.254.169.254", (ipaddress.ip_network("0.0.0.0/0"),), False),  # metadata: never, whatever is listed
    ("224.0.0.1", (), False),
    ("192.0.2.10", (), False),
    ("100.100.1.1", (ipaddress.ip_network("100.64.0.0/10"),), True),  # CGNAT (Tailscale) when listed
    ("::1", (), False),
    ("fe80::1", (), False),
    ("::ffff:169.254.169.254", (), False),
    ("fd00:ec2::254", (ipaddress.ip_network("fc00::/7"),), False),
])
def test_ip_policy(ip: str, allowed: tuple[ipaddress.IPv4Network, ...], ok: bool) -> None:
    assert (ip_refusal(ipaddress.ip_address(ip), allowed) is None) is ok


async def test_check_agent_url() -> None:
    assert await check_agent_url(NO_INBOUND, ()) == NO_INBOUND
    assert await check_agent_url("http://127.0.0.1:8000/a2a", LOOPBACK)
    assert await check_agent_url("http://localhost:8000", LOOPBACK)
    for bad in ("http://localhost:8000", "file:///etc/passwd", "http://user:pw@8.8.8.8/", "http://",
                "http://no-such-host.invalid/"):
        with pytest.raises(UnsafeAgentURL):
            await check_agent_url(bad, ())
