"""Kanal's public web face (issue 7): channel pages, directory, feeds, embeds, media, publishing API.

Served by its own aiohttp listener (`web.listen`), separate from the Application Service listener,
which stays private. Pages are rendered on the server; no JavaScript is needed to read.
"""

from __future__ import annotations

import logging

from aiohttp import web
from aiohttp.typedefs import Handler

from appservice.clientlog import ThrottledLog, disconnects
from bridge.runtime.context import Context

log = logging.getLogger(__name__)


def make_web_app(ctx: Context) -> web.Application:
    """The web application: pages (pages.py) and the publishing API (api.py)."""
    from bridge.web.api import add_api_routes
    from bridge.web.forwarded import client_addresses
    from bridge.web.join import add_join_routes
    from bridge.web.pages import add_page_routes

    # Behind the reverse proxy, the reader's address comes from X-Forwarded-For (web.trusted_proxies):
    # first, so the rate limits and the throttled log below key on readers, not on the proxy.
    readers = client_addresses(ctx.config.web_trusted_proxies)
    # A reader gone mid-request (a page, a form, an upload) is one throttled line, not a traceback.
    clients = disconnects(ThrottledLog(log), logging.INFO)
    app = web.Application(
        client_max_size=50 * 1024 * 1024, middlewares=[readers, clients, _security_headers]
    )
    add_page_routes(app, ctx)
    add_join_routes(app, ctx)
    add_api_routes(app, ctx)
    return app


DEFAULT_CSP = "default-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"


@web.middleware
async def _security_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every answer (404s and 500s included) carries the strict headers; pages set their own CSP."""
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        response = exc
    response.headers.setdefault("Content-Security-Policy", DEFAULT_CSP)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    if isinstance(response, web.HTTPException):
        raise response
    return response
