"""Agent URLs through the API (issue #10 item 10): refused at create and register, never stored, never a 5xx;
an IPv6 address that carries an IPv4 one is judged as that IPv4 address; a TLS failure is an error, not "busy"."""

from __future__ import annotations

import datetime
import ssl
from functools import partial
from pathlib import Path

import httpx
import pytest
import trio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ..conftest import ADMIN, bearer, create_external, joined, register
from ..proxy.agents import TestAgent, serve_agent
from ..proxy.test_proxy import send_body

REFUSED_URLS = [
    "http://127.0.0.1:9/\r\nX-Injected: 1",  # urlsplit drops CR/LF, so the check passed and the raw URL was stored
    "http://127.0.0.1:9/a2a\n",
    "http://127.0.0.1:9/a b",
    "http://127.0.0.1:9/\ta2a",
    " http://127.0.0.1:9/",
    "http://１２７.0.0.1:9/",  # fullwidth digits: the resolver's IDNA step made them 127.0.0.1
    "http://١٢٧.٠.٠.١:9/",  # Arabic-Indic digits: the IDNA step raised (a 500)
    "http://a..b:9/",  # an empty label: UnicodeError from the resolver (a 500)
    "http://" + "a" * 70 + ":9/",  # a label over 63 characters: the same
    "http://127.0.0.1:0/",  # port 0
    "http://[64:ff9b::a9fe:a9fe]/",  # NAT64 of 169.254.169.254 (metadata)
    "http://[64:ff9b::a00:1]/",  # NAT64 of 10.0.0.1 (private, not listed)
    "http://[2002:a9fe:a9fe::1]/",  # 6to4 of 169.254.169.254
    "http://[::a9fe:a9fe]/",  # IPv4-compatible 169.254.169.254
    "http://[::ffff:0:a00:1]/",  # SIIT-translated 10.0.0.1
    "http://[::ffff:169.254.169.254]/",  # IPv4-mapped
    "http://[64:ff9b:1::a00:1]/",  # local-use NAT64: where the IPv4 sits is unknowable
]


@pytest.mark.parametrize("url", REFUSED_URLS)
async def test_bad_agent_url_is_400_at_register_and_create_and_never_stored(client: httpx.AsyncClient,
                                                                            url: str) -> None:
    wid, token = await joined(client, "agent")  # registered with http://127.0.0.1:9/
    refused = await client.post("/registry/register", json={"id": wid, "url": url}, headers=bearer(token))
    assert refused.status_code == 400, refused.text
    assert refused.json()["code"] == "unsafe_agent_url"
    stored = (await client.get(f"/workspaces/{wid}", headers=ADMIN)).json()
    assert stored["url"] == "http://127.0.0.1:9/"
    created = await client.post("/workspaces", json={"name": "by-url", "external": True, "url": url}, headers=ADMIN)
    assert created.status_code == 400, created.text
    names = [ws["name"] for ws in (await client.get("/workspaces", headers=ADMIN)).json()]
    assert names == ["agent"]


async def test_ipv4_carried_in_ipv6_is_judged_as_that_ipv4(client: httpx.AsyncClient) -> None:
    """The test box lists 127.0.0.0/8, so NAT64 and 6to4 forms of 127.0.0.1 pass as 127.0.0.1 does."""
    created = await create_external(client, "nat64")
    wid, token = created["id"], created["connection"]["auth_token"]
    for url in ("http://[64:ff9b::7f00:1]:9/", "http://[2002:7f00:1::1]:9/"):
        await register(client, wid, url=url, token=token)
        assert (await client.get(f"/workspaces/{wid}", headers=ADMIN)).json()["url"] == url


def _self_signed(directory: Path) -> ssl.SSLContext:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
    (directory / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                          serialization.PrivateFormat.PKCS8,
                                                          serialization.NoEncryption()))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(directory / "cert.pem", directory / "key.pem")
    return context


async def _untrusted_tls_agent(nursery: trio.Nursery, directory: Path) -> str:
    """An https agent whose certificate no one trusts: every handshake with it fails."""

    async def handshake(stream: trio.SSLStream[trio.SocketStream]) -> None:
        try:
            await stream.do_handshake()
        except trio.BrokenResourceError:
            pass  # the box refused our certificate, as it should

    serve = partial(trio.serve_ssl_over_tcp, handshake, 0, _self_signed(directory), host="127.0.0.1")
    listeners = await nursery.start(serve)
    return f"https://127.0.0.1:{listeners[0].transport_listener.socket.getsockname()[1]}/"


@pytest.mark.parametrize("agent_tls", ["untrusted certificate", "plain HTTP on an https URL"])
async def test_tls_failure_to_an_agent_is_502_not_busy(client: httpx.AsyncClient, nursery: trio.Nursery,
                                                       tmp_path: Path, agent_tls: str) -> None:
    agent = TestAgent()
    if agent_tls == "untrusted certificate":
        url = await _untrusted_tls_agent(nursery, tmp_path)
    else:
        url = (await serve_agent(nursery, agent)).replace("http://", "https://")
    created = await create_external(client, "tls-agent")
    wid, token = created["id"], created["connection"]["auth_token"]
    await register(client, wid, url=url, token=token)
    sent = await client.post(f"/workspaces/{wid}/a2a", json=send_body("hello", "tls-1"), headers=ADMIN)
    assert sent.status_code == 502, sent.text  # before: 202 "workspace agent busy — message queued"
    assert "TLS handshake with the agent failed" in sent.json()["error"]
    assert (await client.get(f"/workspaces/{wid}/queue", headers=ADMIN)).json() == []
    assert agent.received == []
