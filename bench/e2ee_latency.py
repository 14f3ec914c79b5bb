"""Relay latency and Kanal's CPU per post from an encrypted backstage, against an unencrypted one.

In one run, two fresh loopback stacks (Synapse on SQLite, relaxed rate limits, and a `kanal run`
subprocess), started side by side in a temporary folder:

* encrypted: the homeserver encrypts every private room at creation (`invite`) and Kanal's bot takes
  part (`encryption.enabled`). The owner is an encrypting client (matrix-nio with vodozemac): each
  backstage post is Megolm-encrypted by the client and decrypted by Kanal before it is relayed.
* plain: the same Kanal code without encryption; the owner's backstage is unencrypted.

Each post is sent, then the public channel is read (`/messages`, every 20 ms) until its copy is there;
the clock runs from the send to that read. Posts go one at a time, in `--rounds` rounds alternating
the two stacks (so both see the same machine noise). Kanal's CPU per post is its process's
utime + stime over a round, divided by the posts. Medians over the rounds are printed, with the ratio.

Run:  cd <tree> && .venv/bin/python -m bench.e2ee_latency [--posts 20] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from tests.encrypting import Encrypting, encrypted_channel
from tests.support import Env, create_channel

from ._common import DOMAIN, code_version, cpu_seconds, synapse_and_kanal

READ_EVERY_S = 0.02
RELAY_TIMEOUT_S = 30.0


async def relay_times(
    post: Callable[[str], Awaitable[object]], read: Callable[[], Awaitable[list[dict[str, Any]]]], count: int
) -> list[float]:
    """Seconds from sending each of `count` posts to its copy in the public channel, one at a time."""
    times: list[float] = []
    for n in range(count):
        body = f"latency {n} {secrets.token_hex(3)}"
        started = time.monotonic()
        await post(body)
        deadline = started + RELAY_TIMEOUT_S
        while not any(e.get("content", {}).get("body", "").startswith(body) for e in await read()):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{body!r} was not relayed within {RELAY_TIMEOUT_S:.0f} s")
            await asyncio.sleep(READ_EVERY_S)
        times.append(time.monotonic() - started)
    return times


async def bench(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="kanal-bench-e2ee-") as tmp:
        root = Path(tmp)
        (root / "encrypted").mkdir()
        (root / "plain").mkdir()
        async with (
            synapse_and_kanal(root / "encrypted", encryption=True) as secret,
            synapse_and_kanal(root / "plain") as open_stack,
        ):
            secret_env = Env(secret.synapse, secret.kanal, DOMAIN, f"@kanal:{DOMAIN}", "kanal_", root / "encrypted")
            plain_env = Env(
                open_stack.synapse, open_stack.kanal, DOMAIN, f"@kanal:{DOMAIN}", "kanal_", root / "plain"
            )
            owner = await Encrypting.new(secret_env, root / "owner-store")
            try:
                _handle, _chat, backstage, channel = await encrypted_channel(secret_env, owner)
                alice = await plain_env.user("alice")
                plain = await create_channel(plain_env, alice, plain_env.handle("lat"))

                async def encrypted_series(count: int) -> list[float]:
                    return await relay_times(lambda body: owner.send(backstage, body), lambda: owner.raw(channel), count)

                async def plain_series(count: int) -> list[float]:
                    return await relay_times(
                        lambda body: alice.text(plain.backstage, body), lambda: alice.messages(plain.broadcast), count
                    )

                await encrypted_series(3)  # warm up: the room key shared, caches filled
                await plain_series(3)
                rows: dict[str, list[tuple[float, float]]] = {"encrypted": [], "plain": []}
                series = {"encrypted": (encrypted_series, secret.kanal), "plain": (plain_series, open_stack.kanal)}
                for round_number in range(1, args.rounds + 1):
                    for name in (("encrypted", "plain") if round_number % 2 else ("plain", "encrypted")):
                        run, kanal = series[name]
                        pid = kanal.process.pid if kanal.process is not None else None
                        cpu = cpu_seconds(pid)
                        times = await run(args.posts)
                        per_post = (cpu_seconds(pid) - cpu) / args.posts
                        rows[name].append((statistics.median(times), per_post))
                        print(
                            f"round {round_number} {name:9}: latency p50 {statistics.median(times) * 1000:6.1f} ms, "
                            f"Kanal CPU {per_post * 1000:5.1f} ms/post",
                            flush=True,
                        )
            finally:
                await owner.close()
                for client in (*secret_env.users, *plain_env.users):
                    await client.close()
    latency = {name: statistics.median(r[0] for r in rounds) for name, rounds in rows.items()}
    cpu = {name: statistics.median(r[1] for r in rounds) for name, rounds in rows.items()}
    print(
        f"\n{code_version()}: {args.rounds} rounds of {args.posts} posts, medians over rounds\n"
        f"relay latency: encrypted backstage {latency['encrypted'] * 1000:.1f} ms, unencrypted "
        f"{latency['plain'] * 1000:.1f} ms (ratio {latency['encrypted'] / latency['plain']:.2f})\n"
        f"Kanal CPU per post: encrypted {cpu['encrypted'] * 1000:.1f} ms, unencrypted {cpu['plain'] * 1000:.1f} ms"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--posts", type=int, default=20, help="posts per series (default 20)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, each stack once per round (default 3)")
    args = parser.parse_args(argv)
    return asyncio.run(bench(args))


if __name__ == "__main__":
    sys.exit(main())
