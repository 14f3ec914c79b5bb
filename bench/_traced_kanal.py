"""`kanal` with timing probes, for the benchmarks' `--trace` option (source files are not touched).

Run as `python -m bench._traced_kanal run -c config.yaml` with KANAL_BENCH_TRACE=/path/trace.jsonl.
It wraps a few methods at import time and writes one JSON line per probe, stamped with
`time.monotonic()` (CLOCK_MONOTONIC, shared by every process on the machine):

  txn        the AS transaction: request entered the handler (t0), handler returned (t1), event ids
  dispatch   the processor handled one event: start (t0), end (t1)
  exec       the outbox attempted one entry (resolve + homeserver call): t0, t1, kind, post_source
  send       inside `exec` for kind "send": the homeserver PUT alone (t0, t1)
  record     after `exec`: the outcome written to the database (before its commit)
"""

from __future__ import annotations

import contextvars
import json
import os
import sys
import time
from typing import Any

from appservice import server as _server
from bridge import service as _service
from bridge.runtime import outbox as _outbox

_TRACE = open(os.environ["KANAL_BENCH_TRACE"], "a", buffering=1, encoding="utf-8")
_request_start: contextvars.ContextVar[float] = contextvars.ContextVar("request_start", default=0.0)


def _emit(probe: str, **values: Any) -> None:
    _TRACE.write(json.dumps({"k": probe, **values}) + "\n")


_orig_on_transaction = _server.AppServiceServer.on_transaction


async def _on_transaction(self: Any, request: Any) -> Any:
    _request_start.set(time.monotonic())
    return await _orig_on_transaction(self, request)


_orig_handle_transaction = _service.Bridge.handle_transaction


async def _handle_transaction(self: Any, txn: Any) -> None:
    t0 = _request_start.get() or time.monotonic()
    await _orig_handle_transaction(self, txn)
    _emit(
        "txn",
        t0=t0,
        t1=time.monotonic(),
        id=txn.txn_id,
        events=[e.event_id for e in txn.events],
        echoes=[e.event_id for e in txn.echoes],
    )


_orig_dispatch = _service.Bridge.dispatch


async def _dispatch(self: Any, session: Any, event: Any) -> None:
    t0 = time.monotonic()
    await _orig_dispatch(self, session, event)
    _emit("dispatch", t0=t0, t1=time.monotonic(), event=event.event_id)


def _payload_source(entry: Any) -> Any:
    return entry.payload.get("post_source") if isinstance(entry.payload, dict) else None


def _wrap(owner: Any, name: str, probe: str, describe: Any) -> None:
    """Time `owner.name` (a coroutine function); skip quietly when the code no longer has it."""
    original = getattr(owner, name, None)
    if original is None:
        print(
            f"bench._traced_kanal: {owner.__name__}.{name} not found; probe {probe!r} is off", file=sys.stderr
        )
        return

    async def timed(*args: Any, **kwargs: Any) -> Any:
        t0 = time.monotonic()
        result = await original(*args, **kwargs)
        _emit(probe, t0=t0, t1=time.monotonic(), **describe(*args, **kwargs))
        return result

    setattr(owner, name, timed)


# The outbox has been an `_execute` (attempt + record) or an `_attempt` followed by `_record`.
_wrap(
    _outbox.OutboxWorker,
    "_attempt",
    "exec",
    lambda self, entry: {"id": entry.id, "kind": entry.kind, "post_source": _payload_source(entry)},
)
_wrap(
    _outbox.OutboxWorker,
    "_execute",
    "exec",
    lambda self, entry: {"id": entry.id, "kind": entry.kind, "post_source": _payload_source(entry)},
)
_wrap(_outbox.OutboxWorker, "_record", "record", lambda self, session, entry, outcome: {"id": entry.id})
# Read from the module when OutboxWorker() builds its executor table, so patching the module works.
_wrap(_outbox, "_exec_send", "send", lambda entry, worker: {"id": entry.id})

_server.AppServiceServer.on_transaction = _on_transaction  # type: ignore[method-assign]
_service.Bridge.handle_transaction = _handle_transaction  # type: ignore[method-assign]
_service.Bridge.dispatch = _dispatch  # type: ignore[method-assign]


if __name__ == "__main__":
    from bridge.cli import main

    sys.exit(main())
