"""What moderation acts on: the features register their kinds of content here.

Moderation (decisions, notices, appeals, the moderation room) sits below the features it judges. It
knows posts through the store and writes to channels through the channel-write seam; what only a
feature knows, the feature registers here when it is imported (as outbox executors are registered
with the worker), and moderation asks for it by kind:

    kind              registered by                 what moderation asks of it
    post              bridge.publishing.posts       publish a held post; publish a removed one anew
    comment           bridge.audience.comments      find a reported comment, take it down, restore it,
                                                    who may appeal; the post a thread root stands for
    channel_request   bridge.channels.management    open the channel a refusal kept back (appeal granted)
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from appservice.events import Event
from appservice.ids import EventID, RoomID, UserID
from bridge.moderation.decisions import Ground
from bridge.runtime.context import Context
from bridge.store.models import Channel, Decision, HeldPost, Notice, Post, Room


@dataclass(frozen=True)
class ReportedComment:
    """A reader's comment in one of Kanal's discussion rooms, as Kanal received it."""

    room: Room
    channel: Channel
    event: Event


@dataclass(frozen=True)
class PostKind:
    publish_held: Callable[[Context, AsyncSession, Channel, HeldPost], Awaitable[object]]
    """Publish a held post as backstage or the publishing API would have (the caller sets its status)."""
    republish: Callable[[Context, AsyncSession, Channel, Event], Awaitable[None]]
    """Publish a backstage message anew (a post taken down, reinstated on appeal)."""


class CommentTakeDown(Protocol):
    """Remove a comment for a moderator: a `remove_comment` decision with its statement of reasons."""

    def __call__(
        self,
        ctx: Context,
        session: AsyncSession,
        comment: ReportedComment,
        *,
        decided_by: str,
        ground: Ground,
        explanation: str,
        notice: Notice | None,
    ) -> Awaitable[Decision]: ...


@dataclass(frozen=True)
class CommentKind:
    find: Callable[[Context, AsyncSession, EventID], Awaitable[ReportedComment | None]]
    """The comment an event id names, when it is one Kanal may judge; None otherwise."""
    post_of_root: Callable[[AsyncSession, EventID], Awaitable[Post | None]]
    """The post a thread root stands for (a report on a root is a report on its post)."""
    removed: Callable[[AsyncSession, EventID], Awaitable[bool]]
    take_down: CommentTakeDown
    restore: Callable[[Context, AsyncSession, EventID, int], Awaitable[None]]
    may_appeal: Callable[[AsyncSession, EventID, UserID], Awaitable[bool]]
    url: Callable[[RoomID, EventID, str], str]
    """A permalink (room id, event id, domain) for the moderators."""


@dataclass(frozen=True)
class ChannelRequestKind:
    reopen: Callable[[Context, AsyncSession, int], Awaitable[None]]
    """A refused registration request, granted on appeal: create the channel if the handle is free."""


@dataclass
class _Registry:
    post: PostKind | None = None
    comment: CommentKind | None = None
    channel_request: ChannelRequestKind | None = None


_KINDS = _Registry()


def register_post(kind: PostKind) -> None:
    _KINDS.post = kind


def register_comment(kind: CommentKind) -> None:
    _KINDS.comment = kind


def register_channel_request(kind: ChannelRequestKind) -> None:
    _KINDS.channel_request = kind


def _missing(name: str, module: str) -> RuntimeError:
    return RuntimeError(f"no {name} kind registered with moderation (is {module} imported?)")


def post() -> PostKind:
    if _KINDS.post is None:
        raise _missing("post", "bridge.publishing.posts")
    return _KINDS.post


def comment() -> CommentKind:
    if _KINDS.comment is None:
        raise _missing("comment", "bridge.audience.comments")
    return _KINDS.comment


def channel_request() -> ChannelRequestKind:
    if _KINDS.channel_request is None:
        raise _missing("channel_request", "bridge.channels.management")
    return _KINDS.channel_request
