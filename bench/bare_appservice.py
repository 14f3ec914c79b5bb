"""The floor for bench.ingest: an aiohttp server that only checks the bearer token and parses the JSON.

    KANAL_BENCH_HS_TOKEN=... python -m bench.bare_appservice --port 29399

PUT /_matrix/app/v1/transactions/{txn_id}: compares the token with hmac.compare_digest, reads and
`json.loads` the body, answers 200 {}. GET /health answers 200 (readiness). Runs until SIGTERM.
"""

from __future__ import annotations

import argparse
import hmac
import json
import os
import sys

from aiohttp import web


def make_app(hs_token: str) -> web.Application:
    expected = hs_token.encode()

    async def transaction(request: web.Request) -> web.Response:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            return web.json_response({"errcode": "M_MISSING_TOKEN", "error": "Missing token"}, status=401)
        if not hmac.compare_digest(token.strip().encode(), expected):
            return web.json_response({"errcode": "M_FORBIDDEN", "error": "Invalid token"}, status=403)
        data = json.loads(await request.read())
        if not isinstance(data, dict) or not isinstance(data.get("events"), list):
            return web.json_response({"errcode": "M_BAD_JSON", "error": "no events"}, status=400)
        return web.json_response({})

    async def health(_request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application(client_max_size=16 * 1024 * 1024)
    app.router.add_put("/_matrix/app/v1/transactions/{txn_id}", transaction)
    app.router.add_get("/health", health)
    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.bare_appservice", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    token = os.environ.get("KANAL_BENCH_HS_TOKEN")
    if not token:
        parser.error("set KANAL_BENCH_HS_TOKEN")
    if args.host not in ("127.0.0.1", "::1", "localhost"):
        parser.error("loopback only")
    web.run_app(make_app(token), host=args.host, port=args.port, access_log=None, print=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
