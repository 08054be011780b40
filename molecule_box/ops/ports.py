"""What a failed bind of the API's port means and how to fix it, for ``run`` and for ``doctor``.

One wording for both, so the line ``molecule-box run`` exits with is the one ``doctor`` explains.
"""

from __future__ import annotations

import errno
import socket


def where(addr: str, port: int) -> str:
    """``addr:port`` as a URL writes it (IPv6 in brackets)."""
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"


def bind_problem(addr: str, port: int, exc: OSError) -> tuple[str, str]:
    """(what went wrong, the fix) for an ``OSError`` from binding ``BIND_ADDR``:``PORT``."""
    at = where(addr, port)
    if isinstance(exc, socket.gaierror):
        return (f"BIND_ADDR={addr} does not resolve ({exc.strerror})",
                "set BIND_ADDR to an address of this host, e.g. 127.0.0.1")
    if exc.errno == errno.EADDRINUSE:
        return (f"{at} is in use by another program",
                f"stop it or set PORT to a free port; `ss -ltnp 'sport = :{port}'` shows which program")
    if exc.errno == errno.EACCES:
        return (f"binding {at} is not permitted ({exc.strerror})",
                "use a PORT of 1024 or above (the unit drops every capability) and front the box with a TLS proxy")
    if exc.errno == errno.EADDRNOTAVAIL:
        return (f"BIND_ADDR={addr} is not an address of this host",
                "use 127.0.0.1 (with a TLS proxy in front) or an address `ip addr` lists")
    return f"cannot bind {at}: {exc.strerror or exc}", "check BIND_ADDR and PORT"
