"""Key files: secrets Kanal makes once and keeps beside its database (the audit key, the key that
seals the bot's encryption keys), mode 0600, never overwritten."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def create_once(path: Path, data: bytes) -> bytes:
    """Write `data` to `path` (mode 0600) unless the file exists; what the file holds afterwards.

    A private temporary file is written, then hard-linked into place: the link either creates the
    complete file or fails because another process got there first, whose content then wins.
    Raises OSError when the file can be neither made nor read.
    """
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.link(temporary, path)
    except FileExistsError:
        return path.read_bytes()
    finally:
        os.unlink(temporary)
    return data
