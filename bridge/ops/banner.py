"""What `kanal up` prints for a newcomer: every command in it runs as printed, from where `kanal up` ran."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path


def installed_command(name: str) -> str:
    """How to run the console script `name` installed beside this Python (`.venv/bin/<name>` from the
    project root after `scripts/up`), whether or not that folder is on PATH."""
    script = Path(sys.executable).parent / name
    try:
        return str(script.relative_to(Path.cwd()))  # has a slash: the shell runs it, not a PATH lookup
    except ValueError:
        return str(script)


def up_again(data_dir: str, synapse_port: int, port: int, defaults: tuple[str, int, int]) -> str:
    """The `kanal up` command line that continues this sandbox (the options that differ from `defaults`)."""
    argv = [installed_command("kanal"), "up"]
    for option, value, default in zip(
        ("--data-dir", "--synapse-port", "--port"), (data_dir, synapse_port, port), defaults, strict=True
    ):
        if value != default:
            argv += [option, str(value)]
    return shlex.join(argv)


def new_encrypted_sandbox() -> str:
    """The command that makes a sandbox with end-to-end encryption on (in a folder the reader names)."""
    return shlex.join([installed_command("kanal"), "up", "--encryption", "--data-dir"]) + " <a new folder>"


def print_banner(
    homeserver_url: str, admin: str, password: str, bot: str, data_dir: Path, web_url: str | None
) -> None:
    register = shlex.join(
        [installed_command("register_new_matrix_user"), "-c", str(data_dir / "synapse" / "homeserver.yaml")]
    )
    web = f"\nand on its web page, {web_url}/c/dailynews" if web_url else ""
    print(
        f"""
Kanal sandbox is running.

  Homeserver  {homeserver_url}
  Admin       {admin}
  Password    {password}   (also in {data_dir / "admin-password"})

Log in from Element (or any Matrix client): choose “Sign in”, edit the homeserver to
{homeserver_url}, and sign in as {admin.split(":")[0][1:]} with the password above.
Then start a direct chat with {bot} and send:  create dailynews Daily News
You are invited to the channel's backstage room; what you post there appears in #dailynews:localhost{web}
Make more accounts with: {register}

Press Ctrl-C to stop Kanal and Synapse.
""",
        flush=True,
    )
