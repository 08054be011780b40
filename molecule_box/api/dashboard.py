"""The dashboard: its static page (package data, no build step) and its login session.

The page is plain files under ``molecule_box/dashboard/static``, open to anyone (they hold no data); every
call the page makes afterwards goes to the API's own routes with the session cookie, which ``authorize``
accepts for the admin (with the CSRF token on every mutating call). Login takes the admin token in the body,
never in a URL, checked by the admin tier's own rule, so a wrong token is refused and counted like any other.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from quart import Blueprint, Response, request

from ..authz import CSRF_HEADER, SESSION_COOKIE, SESSION_TTL, authorize, session_cookie
from ..errors import NotFound
from ..schemas import Login
from .routing import Call, box, respond, route

bp = Blueprint("dashboard", __name__)

_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
          ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}
#: The page loads nothing from elsewhere and runs no inline script, so an injected tag could not run.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
       "frame-ancestors 'none'; base-uri 'none'; form-action 'self'")


def _static(name: str) -> Response:
    """A file of the page by its plain name (no directories), or 404."""
    suffix = name[name.rfind("."):] if "." in name else ""
    if "/" in name or "\\" in name or name.startswith(".") or suffix not in _TYPES:
        raise NotFound("not found")
    item = resources.files("molecule_box").joinpath("dashboard", "static", name)
    if not item.is_file():
        raise NotFound("not found")
    response = Response(item.read_bytes(), content_type=_TYPES[suffix])
    response.headers["Content-Security-Policy"] = CSP
    response.headers["Cache-Control"] = "no-cache"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


@route(bp, "/", "GET", summary="The dashboard page (log in with the admin token)", auth="none",
       endpoint="dashboard_index")
async def index(call: Call[None]) -> Any:
    return _static("index.html")


@route(bp, "/dashboard/<name>", "GET", summary="A static file of the dashboard page", auth="none",
       responses={200: "OK", 404: "No such file"})
async def static_file(call: Call[None], name: str) -> Any:
    return _static(name)


def _session_body(csrf: str, expires_at: float) -> dict[str, Any]:
    return {"csrf_token": csrf, "expires_at": int(expires_at), "csrf_header": CSRF_HEADER}


@route(bp, "/session", "POST", summary="Log in to the dashboard: the admin token in, an HttpOnly session "
       "cookie and its CSRF token out (molecule-box addition)", auth="none", body=Login,
       responses={200: "Logged in", 400: "Bad body", 401: "Wrong admin token"})
async def login(call: Call[Login]) -> Any:
    b = box()
    await authorize(b, "admin", {"Authorization": f"Bearer {call.body.admin_token}"})
    cookie, session = b.sessions.open()
    response = respond({"logged_in": True, **_session_body(session.csrf, session.expires_at)})
    response.set_cookie(SESSION_COOKIE, cookie, max_age=int(SESSION_TTL), httponly=True, samesite="Strict",
                        secure=request.scheme == "https", path="/")
    return response


@route(bp, "/session", "GET", summary="Whether this browser is logged in, and then its session's CSRF token and "
       "expiry (molecule-box addition)", auth="none")
async def current_session(call: Call[None]) -> Any:
    # Open, so the page learns "not logged in" without a refused request (no console error, no refusal
    # counted); the token goes only to the holder of the HttpOnly cookie it belongs to (no CORS: another
    # origin cannot read it).
    session = box().sessions.find(session_cookie(request.headers))
    if session is None:
        return respond({"logged_in": False})
    return respond({"logged_in": True, **_session_body(session.csrf, session.expires_at)})


@route(bp, "/session", "DELETE", summary="Log out: the session ends on the server (molecule-box addition)",
       auth="admin", responses={200: "Logged out", 401: "Not logged in, or no CSRF token"})
async def logout(call: Call[None]) -> Any:
    box().sessions.close(session_cookie(request.headers))
    response = respond({"logged_in": False})
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="Strict")
    return response
