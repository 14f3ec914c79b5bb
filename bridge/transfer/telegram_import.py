"""Bring a Telegram channel over: `kanal import telegram <export-dir> --channel <handle>`.

    result.json ─▶ check pass (streamed, in a thread): the header, every message checked, its media
         │          found inside the export; a malformed export stops here, nothing imported
         ▼
    the channel: active, and empty but for an earlier run of this import ─▶ title, description, photo
         ▼
    import pass (streamed again), each message not imported yet, in order:
        service message?  a pin applied (unless one was queued for that post before: a re-run does
                          not undo an unpin), anything else summarised
        plan_message ─▶ its media uploaded as the ghost ─▶ the hooks (gate.judge): held or rejected
        recorded and counted ─▶ posts.publish_imported (seam.publish at the original time `ts`)
        one transaction per batch; paced: at most `rate` posts a second, and at most BACKLOG entries
        waiting in the channel's room queues, so live posts of other channels are never stuck behind it
         ▼
    the outbox sends (this process, or the running Kanal: runtime.sending) ─▶ the summary

Once only: a post's source is `telegram:<channel id>:<chat id>:<message id>`; a run skips every
message whose post (or held post) exists. Posts and their outbox entries commit together, so an
import killed at any point (SIGKILL included) resumes after its last committed batch, and the outbox
sends what was queued exactly once. The homeserver failing midway (an upload refused) stops the import
the same way (ImportStopped): what was committed stays, and running it again goes on from there.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Final

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from appservice.errors import MatrixConnectionError, MatrixRequestError
from appservice.events import Event
from appservice.ids import EventID, RoomID, UserID
from bridge.broadcast import seam
from bridge.channels.avatar import set_channel_avatar
from bridge.channels.management import CreationRefused, create_for, set_about, set_title
from bridge.channels.registry import title_refusal
from bridge.matrix.imported import Planned, plan_message, source_id, source_prefix, with_media
from bridge.moderation.gate import judge
from bridge.publishing.posts import publish_imported
from bridge.runtime.context import Context
from bridge.runtime.outbox import OutboxKind, OutboxStatus, room_queue
from bridge.runtime.sending import sending
from bridge.store import queries
from bridge.store.models import Channel, ChannelStatus, HeldPost, HeldPostStatus, OutboxEntry, Post
from bridge.text.names import InvalidTitle, salvage_title
from bridge.text.telegram import (
    PHOTO_DELETE_ACTIONS,
    PHOTO_SET_ACTIONS,
    ExportError,
    ExportHeader,
    ExportMessage,
    read_export,
)

log = logging.getLogger(__name__)

RESULT_FILE: Final = "result.json"
DEFAULT_RATE: Final = 20.0  # posts a second
BATCH: Final = 20  # messages per transaction (a resume point)
BACKLOG: Final = 200  # outbox entries at most waiting in the channel's queues
DEFAULT_MAX_MEDIA: Final = 50 * 1024 * 1024  # Synapse's default max_upload_size
READ_BATCH: Final = 50  # messages read from the file per trip to the reading thread
WAIT_POLL_S: Final = 0.2
DEFAULT_PATIENCE: Final = 120.0  # seconds the end waits for a send that does not move


class ImportRefused(Exception):
    """The import cannot go on; the message says why (shown to whoever ran it, no traceback)."""


class ImportStopped(Exception):
    """The homeserver failed midway; what was committed is kept and a re-run goes on from there."""


@dataclass
class Checked:
    """What the check pass found."""

    header: ExportHeader
    messages: int = 0
    posts: int = 0  # messages that would become posts
    media: int = 0
    media_bytes: int = 0
    ids: set[int] = field(default_factory=set)
    problems: list[str] = field(default_factory=list)
    skipped_media: dict[int, str] = field(default_factory=dict)  # id → why its file is left out
    photo: str | None = None  # the last channel photo a service message set
    service: Counter[str] = field(default_factory=Counter)
    reactions: int = 0


@dataclass
class Summary:
    """What an import did (or, in a dry run, would do)."""

    channel: str
    source: str
    dry_run: bool
    messages: int = 0
    posts: int = 0
    media: int = 0
    already: int = 0
    skipped: list[str] = field(default_factory=list)
    held: list[int] = field(default_factory=list)
    rejected: list[int] = field(default_factory=list)
    service: Counter[str] = field(default_factory=Counter)
    pinned: int = 0
    metadata: list[str] = field(default_factory=list)
    unsent: int = 0
    failed: int = 0
    seconds: float = 0.0
    reactions: int = 0

    def lines(self) -> list[str]:
        verb = "Would import" if self.dry_run else "Imported"
        rate = self.posts / self.seconds if self.seconds > 0 else 0.0
        out = [
            f"{verb} {self.posts} posts ({self.media} with media) of {self.messages} messages from "
            f"{self.source!r} into #{self.channel}"
            + ("" if self.dry_run else f" in {self.seconds:.1f} s ({rate:.1f} posts/s)"),
        ]
        if self.already:
            out.append(f"Already imported before: {self.already}")
        if self.held or self.rejected:
            out.append(
                f"Held for the moderators: {len(self.held)} {_ids(self.held)}; "
                f"rejected by the compliance hooks: {len(self.rejected)} {_ids(self.rejected)}"
            )
        if self.service:
            parts = ", ".join(f"{action} {n}" for action, n in sorted(self.service.items()))
            out.append(f"Service messages: {parts} (pins applied: {self.pinned}; the rest summarised here)")
        if self.reactions:
            out.append(f"Reactions on {self.reactions} messages are not imported (counts are not people)")
        out.extend(self.metadata)
        if self.skipped:
            out.append(f"Not imported or left out ({len(self.skipped)}):")
            out.extend(f"  {problem}" for problem in self.skipped)
        if self.failed:
            out.append(f"The homeserver refused {self.failed} sends; see the log")
        if self.unsent:
            out.append(f"Still being sent: {self.unsent} (the outbox sends them; run again to wait)")
        return out


def _ids(ids: list[int]) -> str:
    return f"(messages {', '.join(map(str, ids[:20]))}{', …' if len(ids) > 20 else ''})" if ids else ""


@dataclass(frozen=True)
class Progress:
    done: int  # messages handled (imported, skipped, held …)
    total: int
    posts: int
    media: int
    rate: float  # posts a second so far


ProgressCallback = Callable[[Progress], None]


# -- reading the export (in a thread: files are read with blocking calls) --------------------------


def _open(export_dir: Path) -> IO[str]:
    path = export_dir / RESULT_FILE
    if not path.is_file():
        raise ExportError(f"{export_dir} has no {RESULT_FILE} (export with the format 'Machine-readable JSON')")
    return path.open(encoding="utf-8-sig")


def media_file(export_dir: Path, message: ExportMessage) -> Path | None:
    """The message's media file, inside the export (a link leading out of it is refused)."""
    relative = message.photo or message.file
    if relative is None:
        return None
    root = export_dir.resolve()
    path = (root / relative).resolve()
    if not path.is_relative_to(root):
        raise ExportError(f"message {message.id}: the media path {relative!r} leaves the export's folder")
    return path


def check_export(export_dir: Path, max_media: int) -> Checked:
    """The check pass: every message read and checked, the media looked for. Blocking."""
    with _open(export_dir) as source:
        header, messages = read_export(source)
        checked = Checked(header)
        for message in messages:
            checked.messages += 1
            if message.id in checked.ids:
                raise ExportError(f"message {message.id} appears twice")
            checked.ids.add(message.id)
            if message.has_reactions:
                checked.reactions += 1
            if message.type == "service":
                checked.service[message.action or "unknown"] += 1
                if message.action in PHOTO_SET_ACTIONS and message.photo:
                    path = media_file(export_dir, message)
                    checked.photo = message.photo if path is not None and path.is_file() else checked.photo
                elif message.action in PHOTO_DELETE_ACTIONS:
                    checked.photo = None
                continue
            path = media_file(export_dir, message)
            if message.missing is not None:
                checked.skipped_media[message.id] = f"its media file was not in the export ({message.missing})"
            elif path is not None and not path.is_file():
                checked.skipped_media[message.id] = f"its media file {message.photo or message.file!r} is missing"
            elif path is not None and path.stat().st_size > max_media:
                size = path.stat().st_size
                checked.skipped_media[message.id] = (
                    f"its media file {message.photo or message.file!r} ({size // (1024 * 1024)} MiB) is larger "
                    f"than the homeserver takes ({max_media // (1024 * 1024)} MiB)"
                )
            elif path is not None:
                checked.media += 1
                checked.media_bytes += path.stat().st_size
    return checked


def _stream(export_dir: Path) -> tuple[IO[str], Iterator[ExportMessage]]:
    source = _open(export_dir)
    _header, messages = read_export(source)
    return source, messages


# -- the import ----------------------------------------------------------------------------------------


class Importer:
    def __init__(
        self,
        ctx: Context,
        export_dir: Path,
        handle: str,
        *,
        dry_run: bool = False,
        rate: float = DEFAULT_RATE,
        progress: ProgressCallback | None = None,
        max_media: int | None = None,
        patience: float = DEFAULT_PATIENCE,
        owner: str | None = None,
    ) -> None:
        self.ctx = ctx
        self.owner = owner  # a missing channel is created for them (an operator's act)
        self.export_dir = export_dir
        self.handle = handle
        self.dry_run = dry_run
        self.rate = rate
        self.progress = progress
        self.max_media = max_media
        self.lang = ctx.config.default_language
        self.started = time.monotonic()
        self.started_at = datetime.now(UTC)
        self.patience = patience
        self.pinned: set[str] = set()  # imported posts a pin was queued for (this run or before)

    async def run(self) -> Summary:
        max_media = self.max_media or (DEFAULT_MAX_MEDIA if self.dry_run else await self._upload_limit())
        checked = await asyncio.to_thread(check_export, self.export_dir, max_media)
        found = await self._channel(checked.header)
        summary = Summary(self.handle, checked.header.name, self.dry_run, messages=checked.messages)
        summary.reactions = checked.reactions
        summary.service = checked.service
        if self.dry_run:
            if found is None:  # to be created for self.owner: plan into a channel not yet recorded
                summary.metadata.append(f"Would create #{self.handle} for {self.owner}")
                found = Channel(
                    id=0,
                    handle=self.handle,
                    title=self._title(checked.header.name) or self.handle,
                    owner=self.owner,
                    ghost_user_id=self.ctx.ghost_for(self.handle),
                )
            prefix = f"{source_prefix(found.id)}{checked.header.id}:"
            done = await self._imported(found, prefix) if found.id else {}
            self.pinned = await self._pinned_before(found, prefix) if found.id else set()
            await self._plan_only(found, checked, done, summary)
            return summary
        self.started, self.started_at = time.monotonic(), datetime.now(UTC)
        try:
            async with sending(self.ctx, "import") as sender:
                channel = found or await self._create(checked.header, summary, sender.wake)
                prefix = f"{source_prefix(channel.id)}{checked.header.id}:"
                done = await self._imported(channel, prefix)
                self.pinned = await self._pinned_before(channel, prefix)
                await self._metadata(channel, checked, summary)
                await self._import(channel, checked, done, summary, sender.wake)
                await self._wait_sent(channel, summary)
        except (MatrixRequestError, MatrixConnectionError) as exc:
            raise ImportStopped(
                f"the homeserver failed ({exc}); what was imported is kept: run the import again to go on "
                "from there"
            ) from exc
        summary.seconds = time.monotonic() - self.started
        return summary

    def _title(self, name: str) -> str | None:
        """The export's name as a title Kanal takes (cleaned, or cut short), or None if nothing is left."""
        try:
            return salvage_title(name, self.ctx.config.title_max_length)
        except InvalidTitle:
            return None

    async def _upload_limit(self) -> int:
        try:
            answer = await self.ctx.client.request("GET", "/_matrix/client/v1/media/config", user_id=self.ctx.bot)
        except (MatrixRequestError, MatrixConnectionError):
            return DEFAULT_MAX_MEDIA
        size = answer.get("m.upload.size")
        return size if isinstance(size, int) and size > 0 else DEFAULT_MAX_MEDIA

    async def _create(self, header: ExportHeader, summary: Summary, wake: Callable[[], None]) -> Channel:
        """The channel, created for `self.owner` with the export's name as its title (cleaned of what a
        title may not hold, or the handle when nothing is left), once it is ready."""
        assert self.owner is not None
        title = self._title(header.name) or self.handle
        try:
            async with self.ctx.sessions.begin() as session:
                created = await create_for(self.ctx, session, owner=self.owner, handle=self.handle, title=title)
        except CreationRefused as exc:
            raise ImportRefused(f"cannot create #{self.handle}: {exc}") from exc
        self.handle = created.handle or self.handle
        summary.channel = self.handle
        summary.metadata.append(f"Created #{self.handle} for {self.owner}")
        wake()
        deadline = time.monotonic() + self.patience
        while True:
            async with self.ctx.sessions() as session:
                channel = await session.get(Channel, created.id)
            if channel is not None and channel.status == ChannelStatus.ACTIVE and channel.rooms:
                return channel
            if channel is None or channel.status == ChannelStatus.FAILED or time.monotonic() > deadline:
                state = channel.status if channel is not None else "gone"
                raise ImportRefused(
                    f"#{self.handle} was not ready within {self.patience:.0f} s ({state}); run the import again "
                    "once it is (nothing was imported)"
                )
            await asyncio.sleep(WAIT_POLL_S)

    async def _channel(self, header: ExportHeader) -> Channel | None:
        """The channel to import into; None when it does not exist and `owner` was given (to create)."""
        async with self.ctx.sessions() as session:
            channel = await queries.channel_by_handle(session, self.handle)
            if channel is None:
                if self.owner is not None:
                    return None
                raise ImportRefused(
                    f"there is no channel #{self.handle}: create it first (`create {self.handle}` in a chat "
                    "with the bot) or name its owner (`--owner @user:server`) to create it here, then import"
                )
            if channel.status != ChannelStatus.ACTIVE or not channel.rooms:
                raise ImportRefused(f"#{self.handle} is {channel.status}: only an active channel can take an import")
            prefix = f"{source_prefix(channel.id)}{header.id}:"
            others = await session.scalar(
                select(func.count())
                .select_from(Post)
                .where(Post.channel_id == channel.id, Post.source_event_id.not_like(f"{prefix}%"))
            )
        if others:
            raise ImportRefused(
                f"#{self.handle} already has {others} posts of its own: import into a new, empty channel "
                "(a run of the same import may be repeated: it goes on where it stopped)"
            )
        return channel

    async def _imported(self, channel: Channel, prefix: str) -> dict[int, bool]:
        """Messages imported before (a re-run, a resumed run): id → whether a post of it is published."""
        async with self.ctx.sessions() as session:
            posts = (
                await session.execute(
                    select(Post.source_event_id, Post.redacted).where(
                        Post.channel_id == channel.id, Post.source_event_id.like(f"{prefix}%")
                    )
                )
            ).all()
            held = (
                await session.scalars(
                    select(HeldPost.source_event_id).where(
                        HeldPost.channel_id == channel.id, HeldPost.source_event_id.like(f"{prefix}%")
                    )
                )
            ).all()
        done = {int(source.rsplit(":", 1)[1]): not redacted for source, redacted in posts}
        done.update({int(source.rsplit(":", 1)[1]): False for source in held})
        return done

    async def _pinned_before(self, channel: Channel, prefix: str) -> set[str]:
        """Imported posts a pin was queued for already (an earlier run, or the owner): not pinned again,
        so a re-run does not undo an unpin, and a resumed run still makes the pins it had not reached."""
        async with self.ctx.sessions() as session:
            sources = await session.scalars(
                select(OutboxEntry.ref_source).where(
                    OutboxEntry.queue.in_([room_queue(room) for room in channel.rooms]),
                    OutboxEntry.kind == OutboxKind.PIN,
                    OutboxEntry.ref_source.like(f"{prefix}%"),
                )
            )
            return {source for source in sources if source is not None}

    def _plan(self, channel: Channel, checked: Checked, message: ExportMessage) -> Planned:
        skipped = checked.skipped_media.get(message.id)
        if skipped is not None:
            message = dataclasses.replace(message, photo=None, file=None, missing=message.missing or "missing")
        planned = plan_message(
            message,
            chat_id=checked.header.id,
            chat_name=checked.header.name,
            source=source_id(channel.id, checked.header.id, message.id),
            lang=self.lang,
        )
        if skipped is not None:
            what = "not imported" if planned.content is None else "imported without its media"
            planned = dataclasses.replace(planned, problem=f"message {message.id}: {what}: {skipped}")
        return planned

    async def _plan_only(
        self, channel: Channel, checked: Checked, done: dict[int, bool], summary: Summary
    ) -> None:
        async for message in self._messages():
            if message.id in done:
                summary.already += 1
                continue
            if message.type == "service":
                target = message.action_target
                if message.action == "pin_message" and target is not None:
                    source = source_id(channel.id, checked.header.id, target)
                    summary.pinned += source not in self.pinned
                    self.pinned.add(source)
                continue
            planned = self._plan(channel, checked, message)
            if planned.problem is not None:
                summary.skipped.append(planned.problem)
            if planned.content is not None:
                summary.posts += 1
                summary.media += planned.media is not None
        if checked.header.name and checked.header.name != channel.title:
            summary.metadata.append(f"Title: {checked.header.name!r} (now {channel.title!r})")
        if checked.photo is not None:
            summary.metadata.append(f"Channel photo: {checked.photo}")

    async def _messages(self) -> AsyncIterator[ExportMessage]:
        """The export's messages in order, read in a thread a few at a time."""
        source, messages = await asyncio.to_thread(_stream, self.export_dir)
        try:
            while True:
                batch = await asyncio.to_thread(lambda: list(itertools.islice(messages, READ_BATCH)))
                if not batch:
                    return
                for message in batch:
                    yield message
        finally:
            await asyncio.to_thread(source.close)

    async def _metadata(self, channel: Channel, checked: Checked, summary: Summary) -> None:
        """The export's title, description and last channel photo, when the channel has none of its own yet."""
        header = checked.header
        mxc = None
        if checked.photo is not None and channel.avatar_url is None:
            message = ExportMessage(id=0, type="service", date=0, photo=checked.photo)
            path = await asyncio.to_thread(media_file, self.export_dir, message)  # resolves links: disk reads
            if path is not None:
                data = await asyncio.to_thread(path.read_bytes)
                planned_type = "image/png" if path.suffix.lower() == ".png" else "image/jpeg"
                mxc = await self._upload(channel, data, planned_type, path.name)
        async with self.ctx.sessions.begin() as session:
            current = await session.get(Channel, channel.id)
            assert current is not None
            title = self._title(header.name)
            if header.name and title != current.title:
                refused = title is not None and await title_refusal(session, title, channel_id=current.id)
                if title is not None and not refused:
                    set_title(self.ctx, session, current, title)
                    summary.metadata.append(f"Title set: {title}")
                else:
                    summary.metadata.append(f"Title kept ({header.name!r} cannot be used here)")
            if header.about and header.about != current.about:
                set_about(self.ctx, session, current, header.about)
                summary.metadata.append("Description set")
            if mxc is not None:
                set_channel_avatar(self.ctx, session, current, mxc)
                summary.metadata.append("Channel photo set")

    async def _upload(self, channel: Channel, data: bytes, mimetype: str, filename: str) -> str:
        intent = self.ctx.client.intent(UserID(channel.ghost_user_id))
        return await intent.upload(data, mimetype, filename)

    async def _import(
        self,
        channel: Channel,
        checked: Checked,
        done: dict[int, bool],
        summary: Summary,
        wake: Callable[[], None],
    ) -> None:
        batch: list[tuple[ExportMessage, Planned | None]] = []
        handled = 0
        posted_at = time.monotonic()
        for_rate = 0
        async for message in self._messages():
            handled += 1
            if message.id in done:
                summary.already += 1
                continue
            planned = None if message.type == "service" else self._plan(channel, checked, message)
            if planned is not None and planned.media is not None and planned.content is not None:
                try:
                    planned = await self._with_uploaded(channel, planned)
                except (MatrixRequestError, MatrixConnectionError) as exc:
                    if batch:  # uploaded and planned: kept, so that a re-run starts at this message
                        await self._commit(channel, checked, batch, done, summary)
                        wake()
                    raise ImportStopped(
                        f"the homeserver could not take the media of message {message.id} ({exc}); the import "
                        f"stopped there, with {summary.posts} posts imported in this run: run it again to go on "
                        f"from message {message.id}"
                    ) from exc
                summary.media += 1
            batch.append((message, planned))
            if len(batch) >= BATCH:
                for_rate += await self._commit(channel, checked, batch, done, summary)
                batch = []
                wake()
                await self._pace(channel, for_rate, posted_at)
                self._report(handled, checked.messages, summary)
        if batch:
            await self._commit(channel, checked, batch, done, summary)
            wake()
        self._report(handled, checked.messages, summary)

    async def _with_uploaded(self, channel: Channel, planned: Planned) -> Planned:
        assert planned.media is not None and planned.content is not None
        relative = planned.media.path
        data = await asyncio.to_thread(lambda: (self.export_dir.resolve() / relative).read_bytes())
        mxc = await self._upload(channel, data, planned.media.mimetype, planned.media.filename)
        return dataclasses.replace(planned, content=with_media(planned.content, mxc, len(data)))

    async def _commit(
        self,
        channel: Channel,
        checked: Checked,
        batch: list[tuple[ExportMessage, Planned | None]],
        done: dict[int, bool],
        summary: Summary,
    ) -> int:
        """One transaction: the batch's posts (with their outbox entries), holds and pins. Posts made."""
        made = 0
        async with self.ctx.sessions.begin() as session:
            current = await session.get(Channel, channel.id)
            assert current is not None
            for message, planned in batch:
                if planned is None:
                    self._service(session, current, checked, message, done, summary)
                    continue
                if planned.problem is not None:
                    summary.skipped.append(planned.problem)
                if planned.content is None:
                    continue
                made += await self._post(session, current, checked, message, planned, done, summary)
        return made

    def _service(
        self,
        session: AsyncSession,
        channel: Channel,
        checked: Checked,
        message: ExportMessage,
        done: dict[int, bool],
        summary: Summary,
    ) -> None:
        target = message.action_target
        if message.action != "pin_message" or target is None or not done.get(target):
            return
        source = source_id(channel.id, checked.header.id, target)
        if source not in self.pinned:
            seam.pin(session, channel, source, pinned=True)
            self.pinned.add(source)
            summary.pinned += 1

    async def _post(
        self,
        session: AsyncSession,
        channel: Channel,
        checked: Checked,
        message: ExportMessage,
        planned: Planned,
        done: dict[int, bool],
        summary: Summary,
    ) -> int:
        assert planned.content is not None
        source = source_id(channel.id, checked.header.id, message.id)
        reply = message.reply_to
        reply_source = source_id(channel.id, checked.header.id, reply) if reply is not None and done.get(reply) else None
        event = Event(
            event_id=EventID(source),
            room_id=RoomID(channel.rooms[-1]),
            sender=UserID(channel.owner),
            type=planned.event_type,
            content=planned.content,
            origin_server_ts=planned.ts,
            unsigned={"ref_source": reply_source, "end": planned.end},
        )
        judged = await judge(self.ctx, session, channel, event, author=channel.owner, via="import")
        if judged is not None:
            held, _verdict = judged
            (summary.held if held.status == HeldPostStatus.HELD else summary.rejected).append(message.id)
            done[message.id] = False
            return 0
        await publish_imported(
            session,
            channel,
            source=source,
            author=channel.owner,
            event_type=planned.event_type,
            content=planned.content,
            ts=planned.ts,
            reply_source=reply_source,
            end=planned.end,
        )
        done[message.id] = True
        summary.posts += 1
        return 1

    async def _backlog(self, channel: Channel) -> int:
        async with self.ctx.sessions() as session:
            count = await session.scalar(
                select(func.count())
                .select_from(OutboxEntry)
                .where(
                    OutboxEntry.queue.in_([room_queue(room) for room in channel.rooms]),
                    OutboxEntry.status == OutboxStatus.PENDING,
                )
            )
        return int(count or 0)

    async def _pace(self, channel: Channel, posts: int, since: float) -> None:
        """At most `rate` posts a second, and no deeper backlog than BACKLOG in the channel's queues."""
        ahead = posts / self.rate - (time.monotonic() - since)
        if ahead > 0:
            await asyncio.sleep(ahead)
        while True:
            if await self._backlog(channel) <= BACKLOG:
                return
            await asyncio.sleep(WAIT_POLL_S)

    def _report(self, handled: int, total: int, summary: Summary) -> None:
        if self.progress is not None:
            elapsed = max(time.monotonic() - self.started, 1e-6)
            self.progress(Progress(handled, total, summary.posts, summary.media, summary.posts / elapsed))

    async def _wait_sent(self, channel: Channel, summary: Summary) -> None:
        """Until the channel's queues are empty (everything this import queued is sent or failed), or
        nothing moved for `patience` seconds (the homeserver down: the outbox sends it later)."""
        last, moved = -1, time.monotonic()
        while True:
            waiting = await self._backlog(channel)
            if waiting != last:
                last, moved = waiting, time.monotonic()
            if waiting == 0 or time.monotonic() - moved > self.patience:
                break
            await asyncio.sleep(WAIT_POLL_S)
        summary.unsent = waiting
        async with self.ctx.sessions() as session:
            failed = await session.scalar(
                select(func.count())
                .select_from(OutboxEntry)
                .where(
                    OutboxEntry.queue.in_([room_queue(room) for room in channel.rooms]),
                    OutboxEntry.status == OutboxStatus.FAILED,
                    OutboxEntry.created_at >= self.started_at,
                )
            )
        summary.failed = int(failed or 0)


