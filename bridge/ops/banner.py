"""What `kanal up` prints for a newcomer."""

from __future__ import annotations

from pathlib import Path


def print_banner(homeserver_url: str, admin: str, password: str, bot: str, data_dir: Path) -> None:
    print(
        f"""
Kanal sandbox is running.

  Homeserver  {homeserver_url}
  Admin       {admin}
  Password    {password}   (also in {data_dir / "admin-password"})

Log in from Element (or any Matrix client): choose “Sign in”, edit the homeserver to
{homeserver_url}, and sign in as {admin.split(":")[0][1:]} with the password above.
Then start a direct chat with {bot} and send:  create dailynews Daily News
You are invited to the channel's backstage room; what you post there appears in #dailynews:localhost
and on its web page, http://127.0.0.1:29341/c/dailynews (web.listen in the sandbox's config.yaml).
Make more accounts with: register_new_matrix_user -c {data_dir / "synapse" / "homeserver.yaml"}

Press Ctrl-C to stop Kanal and Synapse.
""",
        flush=True,
    )
