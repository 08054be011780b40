"""Declaring settings: the mechanism the box's own settings and every backend's settings share.

A settings class is a frozen dataclass whose fields are declared with :func:`option`: the variable's name, its
parser, its default and its help text, each written once. :func:`table` reads the rows back for validation,
``molecule-box config``, the generated docs and the env example; :func:`parse` builds the object from the
environment, collecting every bad value instead of stopping at the first. The parsers here are the ones the
box's settings use, shared so a plugin's settings read and fail like the box's own.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

T = TypeVar("T")
C = TypeVar("C")

#: Variables whose values are never echoed in an error message.
SECRET_VARIABLES = frozenset({"ADMIN_TOKEN", "SECRETS_ENCRYPTION_KEY"})


@dataclasses.dataclass(frozen=True)
class Setting:
    """One environment variable: what it is called, how it parses, what it means.

    ``default`` is None for a setting whose default is derived from others when it is unset (``derived``)."""

    field: str
    env: str
    parse: Callable[[str], Any]
    default: Any
    help: str
    derived: bool = False


def option(env: str, parse: Callable[[str], T], default: T, help: str, *, derived: bool = False) -> T:
    """A settings field read from ``env``. With ``derived``, ``default`` serves only a settings object built
    directly; :func:`parse` leaves the field None when unset, for its caller to derive."""
    meta = {"env": env, "parse": parse, "help": help, "derived": derived}
    result: T = dataclasses.field(default=default, metadata={"setting": meta})
    return result


def table(cls: type[Any]) -> tuple[Setting, ...]:
    """The rows of a settings class, in declaration order."""
    rows = []
    for f in dataclasses.fields(cls):
        meta = f.metadata.get("setting")
        if meta is not None:
            rows.append(Setting(f.name, meta["env"], meta["parse"], None if meta["derived"] else f.default,
                                meta["help"], meta["derived"]))
    return tuple(rows)


def read(rows: tuple[Setting, ...], values: Mapping[str, str], problems: list[str]) -> dict[str, Any]:
    """Field → parsed value (or the row's default when unset); every bad value is appended to ``problems``."""
    parsed: dict[str, Any] = {}
    for setting in rows:
        raw = values.get(setting.env)
        if raw is None or raw.strip() == "":
            parsed[setting.field] = setting.default
            continue
        try:
            parsed[setting.field] = setting.parse(raw)
        except ValueError as exc:
            shown = "<hidden>" if setting.env in SECRET_VARIABLES else repr(raw)
            problems.append(f"{setting.env} {exc}, not {shown}")
    return parsed


def parse(cls: type[C], values: Mapping[str, str], problems: list[str]) -> C:
    """``cls`` read from ``values``; with problems appended, the defaults stand in for the bad values."""
    rows = table(cls)
    parsed = read(rows, values, problems)
    return cls(**{s.field: parsed.get(s.field, s.default) for s in rows if not s.derived})


def shown_default(setting: Setting) -> str:
    """The default as an env file would spell it; empty when there is none or it is derived."""
    return "" if setting.default in (None, ()) else str(setting.default)


# -- parsers: each raises ValueError with what is wanted, never Python's own message -------------------------


def number(kind: Callable[[str], T], raw: str, wanted: str) -> T:
    """``kind(raw)``, failing with ``wanted`` rather than Python's message ("invalid literal for int() ...")."""
    try:
        return kind(raw.strip())
    except ValueError:
        raise ValueError(wanted) from None


def positive_float(raw: str) -> float:
    wanted = "must be a positive number of seconds (fractions allowed)"
    value = number(float, raw, wanted)
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(wanted)
    return value


def non_negative_float(raw: str) -> float:
    value = number(float, raw, "must be zero or a positive number of seconds")
    if not (value >= 0 and math.isfinite(value)):
        raise ValueError("must be zero or a positive number of seconds")
    return value


def positive_int(raw: str) -> int:
    value = number(int, raw, "must be a positive whole number")
    if value <= 0:
        raise ValueError("must be a positive whole number")
    return value


def text(raw: str) -> str:
    return raw.strip()


def boolean(raw: str) -> bool:
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ValueError("must be true or false")


def name(raw: str, wanted: str) -> str:
    """A name of letters, digits and ``-_.``."""
    raw = raw.strip()
    if not raw or not all(c.isalnum() or c in "-_." for c in raw):
        raise ValueError(wanted)
    return raw


def name_list(raw: str) -> str:
    """Normalised to ``a,b,c`` (kept as text so every default prints as a valid env value)."""
    names = list(dict.fromkeys(part.strip() for part in raw.split(",") if part.strip()))
    if not names or not all(c.isalnum() or c in "-_." for n in names for c in n):
        raise ValueError("must be a comma-separated list of names such as langgraph,claude-code")
    return ",".join(names)


def bind_scope(bind_addr: str) -> tuple[str, str]:
    """Where ``BIND_ADDR`` listens: ("loopback" | "any" | "address", the address as a URL's host)."""
    host = bind_addr.strip().strip("[]")
    if host == "localhost":
        return "loopback", "127.0.0.1"
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return "address", host  # a host name: taken as it is
    url_host = f"[{ip}]" if ip.version == 6 else str(ip)
    if ip.is_loopback:
        return "loopback", url_host
    if ip.is_unspecified:
        return "any", "127.0.0.1"
    return "address", url_host
