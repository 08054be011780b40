"""The quart-trio application: blueprints, body limits and the JSON error handler."""

from __future__ import annotations

from typing import TYPE_CHECKING

from quart import Response
from quart_trio import QuartTrio

from ..asgi import BODY_DEADLINE
from .errors import encode, error_response

if TYPE_CHECKING:
    from ..box import Box


def create_app(box: Box) -> QuartTrio:
    from . import (
        activity,
        bootstrap,
        dashboard,
        files,
        meta,
        plugins,
        registry,
        secrets,
        streams,
        templates,
        tokens,
        workspace_data,
        workspaces,
    )

    app = QuartTrio("molecule_box")
    app.extensions["molecule_box"] = box
    app.config["MAX_CONTENT_LENGTH"] = 1024 * 1024
    app.config["BODY_TIMEOUT"] = BODY_DEADLINE
    app.config["PROVIDE_AUTOMATIC_OPTIONS"] = True
    for module in (workspaces, registry, secrets, tokens, streams, activity, plugins, meta, workspace_data, files,
                   templates, bootstrap, dashboard):
        app.register_blueprint(module.bp)

    @app.errorhandler(Exception)
    async def handle_error(exc: Exception) -> Response:
        status, body, headers = error_response(exc)
        return Response(encode(body), status=status, content_type="application/json", headers=headers)

    @app.after_request
    async def security_headers(response: Response) -> Response:
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        return response

    return app
