"""The invite-link page, `/join/<token>`: a reader enters their Matrix id and the bot invites them.

    GET  /join/<token>   the channel's title and a form for the Matrix id (or why the link no longer works)
    POST /join/<token>   invite (a plain link) or file a join request (an approval link): private.admit

The token is a secret: it is never logged (the listeners keep no access log, and nothing here logs a
path), pages send `Referrer-Policy: no-referrer` and `Cache-Control: no-store`, and a link that does
not work says only whether it is unknown, expired, revoked or used up, never anything about the
channel's other links. The form carries a stamp signed with a key derived from the as_token (so every
Kanal process accepts it) that expires after an hour; a browser's cross-site POST is refused by its
`Origin` / `Sec-Fetch-Site`. POSTs are rate-limited per client address and per link, page views per
address (in memory, per process). Behind a reverse proxy `request.remote` is already the reader's
address from X-Forwarded-For (bridge/web/forwarded.py, web.trusted_proxies).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

from aiohttp import web

from appservice.ids import UserID, is_user_id, server_of
from bridge.channels.hosting import server_acl_content, server_allowed
from bridge.channels.invites import MAX_USER_ID_LENGTH, Rate, RateLimiter, is_link_token, link_state
from bridge.channels.private import admit, find_link, now
from bridge.runtime.context import Context
from bridge.store.hashing import hash_token
from bridge.store.models import Channel, ChannelStatus, InviteLink
from bridge.text.i18n import t
from bridge.web.render import template_environment

FORM_LIFETIME_S: Final = 3600
MAX_FORM_BYTES: Final = 4096
POSTS_PER_ADDRESS: Final = Rate(per_minute=10, burst=5)
POSTS_PER_LINK: Final = Rate(per_minute=30, burst=10)
VIEWS_PER_ADDRESS: Final = Rate(per_minute=120, burst=60)
LANGUAGES: Final = ("en", "fa")
JOIN_CSP: Final = (
    "default-src 'none'; style-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
JOIN_HEADERS: Final = {
    "Content-Security-Policy": JOIN_CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "Content-Type": "text/html; charset=utf-8",
}


@dataclass(frozen=True)
class Form:
    stamp: str
    label: str
    submit: str
    domain: str
    user: str
    hint: str


class JoinPages:
    """The handlers and what they share: the template, the form key, the rate limiters."""

    def __init__(self, ctx: Context, *, clock: Any = time.time) -> None:
        self.ctx = ctx
        self._template = template_environment().get_template("join.html")
        self._key = hashlib.sha256(b"kanal join form\0" + ctx.config.as_token.encode()).digest()
        self._clock = clock
        self.posts_by_address = RateLimiter(POSTS_PER_ADDRESS)
        self.posts_by_link = RateLimiter(POSTS_PER_LINK)
        self.views_by_address = RateLimiter(VIEWS_PER_ADDRESS)

    # -- the form's stamp ----------------------------------------------------------------------------

    def stamp(self, digest: str) -> str:
        issued = str(int(self._clock()))
        return f"{issued}.{self._mac(digest, issued)}"

    def stamp_ok(self, digest: str, stamp: str) -> bool:
        issued, _, mac = stamp.partition(".")
        if not issued.isascii() or not issued.isdigit() or len(issued) > 12:
            return False
        age = self._clock() - int(issued)
        return 0 <= age <= FORM_LIFETIME_S and hmac.compare_digest(mac, self._mac(digest, issued))

    def _mac(self, digest: str, issued: str) -> str:
        return hmac.new(self._key, f"{digest}.{issued}".encode(), hashlib.sha256).hexdigest()[:32]

    # -- responses -----------------------------------------------------------------------------------

    def _page(
        self,
        status: int,
        lang: str,
        heading: str,
        lines: list[str],
        form: Form | None = None,
        headers: dict[str, str] | None = None,
    ) -> web.Response:
        body = self._template.render(
            lang=lang, css="/static/kanal.css", heading=heading, lines=lines, form=form
        )
        return web.Response(
            status=status, body=body.encode("utf-8"), headers={**JOIN_HEADERS, **(headers or {})}
        )

    def _unusable(self, lang: str, state: str) -> web.Response:
        """A link that does not (or no longer) work: unknown 404, expired/revoked/used up 410."""
        status = 404 if state == "unknown" else 410
        why = {
            "unknown": t(lang, "join_page_unknown"),
            "expired": t(lang, "join_page_expired"),
            "revoked": t(lang, "join_page_revoked"),
            "used_up": t(lang, "join_page_used_up"),
        }
        return self._page(status, lang, t(lang, "join_page_unusable"), [why.get(state, why["unknown"])])

    def _slow_down(self, lang: str, wait: float) -> web.Response:
        seconds = max(1, int(wait + 0.999))
        return self._page(
            429,
            lang,
            t(lang, "join_page_problem"),
            [t(lang, "join_page_rate_limited", seconds=seconds)],
            headers={"Retry-After": str(seconds)},
        )

    def _form_page(
        self,
        status: int,
        lang: str,
        channel: Channel,
        link: InviteLink,
        problem: str | None = None,
        user: str = "",
    ) -> web.Response:
        alias = f"#{channel.handle}:{self.ctx.domain}"
        lines = [t(lang, "join_page_intro_approval" if link.approval else "join_page_intro", alias=alias)]
        if problem is not None:
            lines.append(problem)
        form = Form(
            stamp=self.stamp(link.token_hash),
            label=t(lang, "join_page_user_label"),
            submit=t(lang, "join_page_submit_approval" if link.approval else "join_page_submit"),
            domain=self.ctx.domain,
            user=user,
            hint=t(lang, "join_page_knock_hint", alias=alias),
        )
        return self._page(status, lang, t(lang, "join_page_heading", title=channel.title), lines, form)

    async def _lookup(self, token: str) -> tuple[InviteLink, Channel] | None:
        async with self.ctx.sessions() as session:
            link = await find_link(session, token)
            channel = await session.get(Channel, link.channel_id) if link is not None else None
        if (
            link is None
            or channel is None
            or channel.status != ChannelStatus.ACTIVE
            or channel.handle is None
            or channel.broadcast_room_id is None
        ):
            return None
        return link, channel

    # -- handlers ------------------------------------------------------------------------------------

    async def show(self, request: web.Request) -> web.StreamResponse:
        lang = language(request, self.ctx.config.default_language)
        wait = self.views_by_address.take(request.remote or "?")
        if wait > 0:
            return self._slow_down(lang, wait)
        token = request.match_info["token"]
        found = await self._lookup(token) if is_link_token(token) else None
        if found is None:
            return self._unusable(lang, "unknown")
        link, channel = found
        state = link_state(link, now())
        if state != "active":
            return self._unusable(lang, state)
        return self._form_page(200, lang, channel, link)

    async def submit(self, request: web.Request) -> web.StreamResponse:
        lang = language(request, self.ctx.config.default_language)
        token = request.match_info["token"]
        if not is_link_token(token):
            return self._unusable(lang, "unknown")
        if not self._same_origin(request):
            return self._page(403, lang, t(lang, "join_page_problem"), [t(lang, "join_page_form_expired")])
        wait = max(
            self.posts_by_address.take(request.remote or "?"), self.posts_by_link.take(hash_token(token))
        )
        if wait > 0:
            return self._slow_down(lang, wait)
        if request.content_length is None or request.content_length > MAX_FORM_BYTES:
            return self._page(413, lang, t(lang, "join_page_problem"), [t(lang, "join_page_form_expired")])
        data = await request.post()
        user = str(data.get("user_id", "")).strip()[: MAX_USER_ID_LENGTH + 1]
        stamp = str(data.get("form", ""))
        found = await self._lookup(token)
        if found is None:
            return self._unusable(lang, "unknown")
        link, channel = found
        if link_state(link, now()) != "active":
            return self._unusable(lang, link_state(link, now()))
        if not self.stamp_ok(link.token_hash, stamp):
            return self._form_page(400, lang, channel, link, t(lang, "join_page_form_expired"), user)
        problem = self._user_problem(lang, user)
        if problem is not None:
            return self._form_page(400, lang, channel, link, problem, user)
        async with self.ctx.sessions.begin() as session:
            link_now = await find_link(session, token)
            channel_now = await session.get(Channel, channel.id)
            if link_now is None or channel_now is None or channel_now.status != ChannelStatus.ACTIVE:
                return self._unusable(lang, "unknown")
            admission = await admit(
                self.ctx, session, channel_now, UserID(user), link=link_now, source="link"
            )
        self.ctx.outbox.wake()
        outcome = admission.outcome
        if outcome.startswith("link_"):
            return self._unusable(lang, outcome.removeprefix("link_"))
        if outcome == "too_many_requests":
            return self._page(
                503, lang, t(lang, "join_page_problem"), [t(lang, "join_page_too_many_requests")]
            )
        if outcome == "invited":
            heading = t(lang, "join_page_invited_heading")
            text = t(lang, "join_page_invited", user=user, title=channel.title)
        elif outcome == "requested":
            heading = t(lang, "join_page_requested_heading")
            text = t(lang, "join_page_requested", user=user, title=channel.title)
        else:
            heading = t(lang, "join_page_requested_heading")
            text = t(lang, "join_page_already_requested", user=user, title=channel.title)
        return self._page(200, lang, heading, [text])

    def _user_problem(self, lang: str, user: str) -> str | None:
        if len(user) > MAX_USER_ID_LENGTH or not is_user_id(user):
            return t(lang, "join_page_invalid_user", user=user[:64], domain=self.ctx.domain)
        if not server_allowed(server_acl_content(self.ctx.config), server_of(user)):
            return t(
                lang, "join_page_server_not_allowed", server=server_of(user)[:64], domain=self.ctx.domain
            )
        return None

    def _same_origin(self, request: web.Request) -> bool:
        """A browser's cross-site POST is refused; clients that send no Origin rely on the form stamp."""
        if request.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
            return False
        origin = request.headers.get("Origin")
        if origin is None:
            return True
        if origin == "null":
            # Our own `Referrer-Policy: no-referrer` makes browsers send `Origin: null` even for the
            # page's own form; Sec-Fetch-Site (not affected by the policy) then says where it came from.
            return request.headers.get("Sec-Fetch-Site") == "same-origin"
        allowed = {_origin(self.ctx.config.web_public_url), f"{request.scheme}://{request.host}"}
        return origin in allowed


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def language(request: web.Request, default: str) -> str:
    """The first of English and Persian the browser asks for (Accept-Language), else the default."""
    for item in request.headers.get("Accept-Language", "").split(","):
        tag = item.split(";", 1)[0].strip().lower().split("-", 1)[0]
        if tag in LANGUAGES:
            return tag
    return default if default in LANGUAGES else "en"


JOIN_PAGES: Final = web.AppKey("kanal_join_pages", JoinPages)


def add_join_routes(app: web.Application, ctx: Context) -> None:
    """Register `/join/{token}` on `app`; `app[JOIN_PAGES]` holds its state."""
    pages = JoinPages(ctx)
    app[JOIN_PAGES] = pages
    app.router.add_get("/join/{token}", pages.show)
    app.router.add_post("/join/{token}", pages.submit)
