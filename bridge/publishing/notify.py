"""`!notify on|off` in backstage: whether the channel's posts notify its readers.

Every post in a room of N members makes the homeserver evaluate push rules for each of them and, for
a notifying message, store a notification row per member (Synapse: `event_push_actions_staging`, then
`event_push_summary`) — the largest share of a post's cost in a big room. With `!notify off` text posts
go out as `m.notice`, which Synapse's default rule `.m.rule.suppress_notices` marks "don't notify":
no row, no push, no unread badge for the post. Media and polls are sent as they are (a notice is a
text message type). The trade-off is the reader's: posts still arrive and show, but nothing rings.
"""

from __future__ import annotations

from bridge.runtime.dispatch import CommandCall, command
from bridge.store.models import RoomKind
from bridge.text.i18n import t


@command(RoomKind.BACKSTAGE, "notify", permission="notify")
async def notify_command(call: CommandCall) -> None:
    """`!notify on|off` (owner): text posts as notifying messages, or as notices that notify nobody."""
    channel, choice = call.backstage_channel, (call.command.arg(0) or "").lower()
    if choice not in ("on", "off"):
        call.reply("notify_usage", state=t(call.lang, "on" if channel.notify else "off"))
        return
    channel.notify = choice == "on"
    call.reply("notify_on" if channel.notify else "notify_off", handle=channel.handle)
