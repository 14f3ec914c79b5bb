"""`kanal` with experimental patches, to size the fixes the benchmarks suggest (source files untouched).

Run as `python -m bench._whatif_kanal run -c config.yaml` with KANAL_BENCH_WHATIF set to a comma list of:

  wake   the ingest wakes the processor only when it stored an event (not for every transaction that
         merely had candidate types), so dropped events cost no processor round (lease + SELECT)
  rooms  `Bridge._actionable` answers from an in-memory set of non-broadcast rooms (reloaded at most once
         a second) instead of one SELECT per transaction; transactions with nothing to store touch no DB
  lease  `Leases.hold` skips the UPDATE + COMMIT while more than half of the lease is left
  ns     registration namespace regexes compiled once instead of looked up in `re`'s cache per event

These are experiments for measurement, not proposed code: e.g. the `rooms` cache here is not
invalidated when a room is added, it just expires after a second.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import os
import re
import sys
import time
from typing import Any

from sqlalchemy import select

from appservice import registration as _registration
from bridge import service as _service
from bridge.store import leases as _leases
from bridge.store.models import Room

WHAT_IF = {w.strip() for w in os.environ.get("KANAL_BENCH_WHATIF", "").split(",") if w.strip()}
KNOWN = {"wake", "rooms", "lease", "ns"}
if WHAT_IF - KNOWN:
    raise SystemExit(f"KANAL_BENCH_WHATIF: unknown {sorted(WHAT_IF - KNOWN)}; known: {sorted(KNOWN)}")

Bridge = _service.Bridge

if "rooms" in WHAT_IF:
    ROOM_CACHE_S = 1.0

    async def _actionable_cached(self: Any, session: Any, events: list[Any]) -> list[dict[str, Any]]:
        now = time.monotonic()
        cache = getattr(self, "_bench_rooms", None)
        if cache is None or now - cache[0] > ROOM_CACHE_S:
            async with self.ctx.sessions() as fresh:
                ids = set((await fresh.scalars(select(Room.room_id).where(Room.kind != "broadcast"))).all())
            cache = self._bench_rooms = (now, ids)
        ours = cache[1]
        return [
            {"event_id": e.event_id, "room_id": e.room_id, "payload": dataclasses.asdict(e)}
            for e in events
            if self._is_bot_invite(e) or (e.room_id in ours and e.type != "m.room.member")
        ]

    Bridge._actionable = _actionable_cached  # type: ignore[method-assign]

if "wake" in WHAT_IF:
    _stored: contextvars.ContextVar[list[bool] | None] = contextvars.ContextVar("stored", default=None)

    class _GatedEvent(asyncio.Event):
        """Inside handle_transaction, set() only counts when something was stored."""

        def set(self) -> None:
            flag = _stored.get()
            if flag is not None and not flag[0]:
                return
            super().set()

    _orig_init = Bridge.__init__

    def _init(self: Any, *args: Any, **kwargs: Any) -> None:
        _orig_init(self, *args, **kwargs)
        self._wake = _GatedEvent()

    _inner_actionable = Bridge._actionable

    async def _actionable_flagged(self: Any, session: Any, events: list[Any]) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = await _inner_actionable(self, session, events)
        flag = _stored.get()
        if flag is not None and rows:
            flag[0] = True
        return rows

    _orig_handle = Bridge.handle_transaction

    async def _handle(self: Any, txn: Any) -> None:
        token = _stored.set([False])
        try:
            await _orig_handle(self, txn)
        finally:
            _stored.reset(token)

    Bridge.__init__ = _init  # type: ignore[method-assign]
    Bridge._actionable = _actionable_flagged  # type: ignore[method-assign]
    Bridge.handle_transaction = _handle  # type: ignore[method-assign]

if "lease" in WHAT_IF:
    _orig_hold = _leases.Leases.hold

    async def _hold(self: Any, name: str) -> bool:
        held = self.__dict__.setdefault("_bench_held_until", {})
        if time.monotonic() < held.get(name, 0.0):
            return True
        ok: bool = await _orig_hold(self, name)
        if ok:
            held[name] = time.monotonic() + self.seconds / 2
        return ok

    _leases.Leases.hold = _hold  # type: ignore[method-assign]

if "ns" in WHAT_IF:
    _compiled: dict[str, re.Pattern[str]] = {}

    def _matches(self: Any, value: str) -> bool:
        pattern = _compiled.get(self.regex)
        if pattern is None:
            pattern = _compiled[self.regex] = re.compile(self.regex)
        return pattern.match(value) is not None

    _registration.Namespace.matches = _matches  # type: ignore[method-assign]


if __name__ == "__main__":
    from bridge.cli import main

    print(f"bench._whatif_kanal: patches {sorted(WHAT_IF)}", file=sys.stderr, flush=True)
    sys.exit(main())
