"""The publishing API's errors: `ApiError`, and the one middleware that renders every error as JSON.

Errors are rendered as `{"error": {"code", "message", …}}`; the router's 404 and 405 become the same
shape, and anything unexpected is logged and answered with a 500.
"""

from __future__ import annotations

import logging
from typing import Any, Final

from aiohttp import web
from aiohttp.typedefs import Handler

from appservice.clientlog import client_went_away

log = logging.getLogger("bridge.web.api")  # the publishing API's log, one name for all its modules

_HTTP_CODES: Final = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


class ApiError(Exception):
    """An answer other than success: HTTP status, a stable `code`, a message for people, extra fields."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}
        self.extra = extra

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, **self.extra}}

    def response(self) -> web.Response:
        return web.json_response(self.body(), status=self.status, headers=self.headers)


@web.middleware
async def render_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The one place errors become responses (the router's 404 and 405 included)."""
    try:
        response: web.StreamResponse = await handler(request)
    except ApiError as exc:
        return exc.response()
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        code = _HTTP_CODES.get(exc.status, "http_error")
        return ApiError(exc.status, code, exc.reason, headers=headers).response()
    except Exception as exc:
        if client_went_away(request, exc):
            raise  # not our fault: the web app's `disconnects` notes it in one throttled line
        log.exception("publishing API: %s %s failed", request.method, request.path)
        return ApiError(
            500, "internal", "Something went wrong on our side; the request may be retried."
        ).response()
    return response
