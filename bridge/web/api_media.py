"""Files posted through the publishing API, stored in the homeserver's media repository as the channel's ghost."""

from __future__ import annotations

import logging
from typing import Final

import aiohttp
from aiohttp import hdrs

from bridge.runtime.config import Config
from bridge.store.models import Channel
from bridge.web.api_errors import ApiError
from bridge.web.api_requests import Upload

log = logging.getLogger("bridge.web.api")  # the publishing API's log, one name for all its modules

UPLOAD_TIMEOUT_S: Final = 120.0


async def store_upload(http: aiohttp.ClientSession, config: Config, channel: Channel, upload: Upload) -> str:
    """Store the file in the homeserver's media repository as the channel's ghost; its `mxc://` URI."""
    url = f"{config.homeserver_url}/_matrix/media/v3/upload"
    params = {"user_id": channel.ghost_user_id, "filename": upload.filename}
    headers = {hdrs.AUTHORIZATION: f"Bearer {config.as_token}", hdrs.CONTENT_TYPE: upload.content_type}
    try:
        async with http.post(url, params=params, data=upload.data, headers=headers) as response:
            status = response.status
            try:
                answer = await response.json(content_type=None)
            except ValueError:
                answer = None
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        log.warning("publishing API: the media repository is unreachable: %r", exc)
        raise ApiError(
            502, "homeserver_unavailable", "The homeserver could not be reached to store the file; try again."
        ) from exc
    errcode = answer.get("errcode") if isinstance(answer, dict) else None
    if status == 413 or errcode == "M_TOO_LARGE":
        raise ApiError(413, "payload_too_large", "The homeserver refuses files this large.")
    content_uri = answer.get("content_uri") if isinstance(answer, dict) else None
    if status >= 400 or not isinstance(content_uri, str) or not content_uri.startswith("mxc://"):
        log.warning("publishing API: the media repository answered %s %s", status, errcode or "")
        raise ApiError(502, "upload_failed", f"The homeserver did not store the file ({status}); try again.")
    return content_uri
