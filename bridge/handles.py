"""Channel handles: Telegram's rule for now, `[a-z][a-z0-9_]{4,31}`, compared case-insensitively."""

from __future__ import annotations

import re

HANDLE_RE = re.compile(r"^[a-z][a-z0-9_]{4,31}$")
MAX_TITLE_LENGTH = 128
MAX_ABOUT_LENGTH = 1024


class InvalidHandle(ValueError):
    """The text cannot be a channel handle; the message explains the rule."""


def normalise_handle(text: str) -> str:
    """Lower-case, strip a leading `#`/`@` and a `:domain`; raise `InvalidHandle` when it breaks the rule."""
    handle = text.strip().lstrip("#@").split(":", 1)[0].lower()
    if not HANDLE_RE.fullmatch(handle):
        if len(handle) < 5:
            reason = "it is shorter than 5 characters"
        elif len(handle) > 32:
            reason = "it is longer than 32 characters"
        elif not handle[:1].isascii() or not handle[:1].isalpha():
            reason = "it must start with a letter a–z"
        else:
            reason = "it may only use the letters a–z, digits and _"
        raise InvalidHandle(f"'{text}' is not a valid handle: {reason}")
    return handle


def clean_title(text: str) -> str:
    """A title: trimmed, single-line, not empty, not too long."""
    title = " ".join(text.split())
    if not title:
        raise ValueError("the title is empty")
    if len(title) > MAX_TITLE_LENGTH:
        raise ValueError(f"the title is longer than {MAX_TITLE_LENGTH} characters")
    return title
