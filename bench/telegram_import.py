"""`kanal import telegram` throughput, CPU split and memory, against a real Synapse and a running Kanal.

For each export (text only, then with a photo on every message): a fresh channel, then `kanal import
telegram --rate 10000` (pacing off: the backlog window still applies) as a subprocess, timed until
it returns (everything sent). Printed: messages imported per second; CPU seconds of the importer, of
the running Kanal (which sends, on SQLite) and of Synapse (the homeserver's share); the importer's
peak resident memory (`ru_maxrss`), also for a `--dry-run` of a 10,000-message export (the check and
plan passes, both streamed).

    cd /work/main && .venv/bin/python -m bench.telegram_import [--text 1000] [--media 200]
        [--memory 10000] [--fresh-postgres postgresql://postgres@127.0.0.1:5432/postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.support import Env, create_channel
from tests.telegram_export import CHAT_ID, png

from ._common import (
    DOMAIN,
    REPO,
    code_version,
    cpu_seconds,
    engine_of,
    fresh_postgres_database,
    synapse_and_kanal,
)


def write_export(folder: Path, messages: int, *, photos: bool) -> None:
    """`messages` posts in Telegram's format, streamed to disk (a photo on each when `photos`)."""
    (folder / "photos").mkdir(parents=True, exist_ok=True)
    if photos:
        (folder / "photos" / "p.png").write_bytes(png(64, 48, (20, 90, 200)))
    with (folder / "result.json").open("w", encoding="utf-8") as out:
        out.write(json.dumps({"name": "Bench", "type": "public_channel", "id": CHAT_ID})[:-1] + ', "messages": [')
        for i in range(1, messages + 1):
            text = [f"Post {i} with ", {"type": "bold", "text": "some"}, " formatting, و متن فارسی"]
            message = {
                "id": i, "type": "message", "date": "2021-01-01T00:00:00", "date_unixtime": str(1_609_459_200 + i),
                "text": text, "text_entities": [{"type": "plain", "text": t} if isinstance(t, str) else t for t in text],
            }
            if photos:
                message.update(photo="photos/p.png", width=64, height=48)
            out.write(("," if i > 1 else "") + json.dumps(message, ensure_ascii=False))
        out.write("]}")


def run_import(config: Path, folder: Path, handle: str, *extra: str) -> tuple[float, float, int, str]:
    """(wall s, CPU s, peak RSS KiB, stdout) of one `kanal import telegram` run."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    started = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-m", "bridge.cli", "import", "telegram", str(folder), "--channel", handle,
         "--rate", "10000", *extra, "-c", str(config)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env,
    )
    assert process.stdout is not None
    out = process.stdout.read().decode()
    _pid, status, usage = os.wait4(process.pid, 0)
    wall = time.monotonic() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"kanal import exited {os.waitstatus_to_exitcode(status)}: {out}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss, out


async def measure(database_url: str | None, text: int, media: int, memory: int) -> None:
    with tempfile.TemporaryDirectory(prefix="kanal-bench-import-") as tmp:
        workdir = Path(tmp)
        async with synapse_and_kanal(workdir, database_url=database_url) as stack:
            env = Env(stack.synapse, stack.kanal, DOMAIN, f"@kanal:{DOMAIN}", "kanal_", workdir)
            owner = await env.user("owner")
            synapse_pids = list(stack.synapse.pids.values())
            print(f"code {code_version()}, database {engine_of(database_url or 'sqlite')}")
            for label, count, photos in (("text only", text, False), ("with a photo each", media, True)):
                if count <= 0:
                    continue
                folder = workdir / f"export-{label.replace(' ', '-')}"
                await asyncio.to_thread(write_export, folder, count, photos=photos)
                channel = await create_channel(env, owner, env.handle("bench"))
                kanal_before = cpu_seconds(stack.kanal.process.pid if stack.kanal.process else None)
                synapse_before = sum(cpu_seconds(pid) for pid in synapse_pids)
                wall, cpu, rss, _out = await asyncio.to_thread(run_import, stack.config_path, folder, channel.handle)
                kanal_cpu = cpu_seconds(stack.kanal.process.pid if stack.kanal.process else None) - kanal_before
                synapse_cpu = sum(cpu_seconds(pid) for pid in synapse_pids) - synapse_before
                ours = cpu + kanal_cpu
                print(
                    f"{label}: {count} messages in {wall:.1f} s = {count / wall:.1f} messages/s; CPU: importer "
                    f"{cpu:.1f} s + running Kanal {kanal_cpu:.1f} s = Kanal {ours:.1f} s "
                    f"({100 * ours / max(ours + synapse_cpu, 1e-9):.0f}%), Synapse {synapse_cpu:.1f} s; "
                    f"importer peak RSS {rss / 1024:.0f} MiB"
                )
            if memory > 0:
                folder = workdir / "export-memory"
                await asyncio.to_thread(write_export, folder, memory, photos=False)
                size = (folder / "result.json").stat().st_size
                channel = await create_channel(env, owner, env.handle("benchm"))
                wall, cpu, rss, _out = await asyncio.to_thread(
                    run_import, stack.config_path, folder, channel.handle, "--dry-run"
                )
                print(
                    f"dry run of {memory} messages (result.json {size / 1e6:.1f} MB): {wall:.1f} s, "
                    f"peak RSS {rss / 1024:.0f} MiB"
                )
                wall, cpu, rss, _out = await asyncio.to_thread(run_import, stack.config_path, folder, channel.handle)
                print(f"import of {memory} messages: {wall:.1f} s ({memory / wall:.1f}/s), peak RSS {rss / 1024:.0f} MiB")
            for client in env.users:
                await client.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--text", type=int, default=1000)
    parser.add_argument("--media", type=int, default=200)
    parser.add_argument("--memory", type=int, default=10000)
    parser.add_argument("--fresh-postgres", metavar="URL", help="run on a throw-away PostgreSQL database")
    args = parser.parse_args()
    async with contextlib.AsyncExitStack() as stack:
        url = await stack.enter_async_context(fresh_postgres_database(args.fresh_postgres)) if args.fresh_postgres else None
        await measure(url, args.text, args.media, args.memory)


if __name__ == "__main__":
    asyncio.run(main())
