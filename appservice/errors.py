"""Matrix errors, both directions.

    MatrixError                      an error with HTTP status, errcode and message
    ├── (inbound)  raised by handlers; rendered as JSON in exactly one place (server.py)
    └── MatrixRequestError           the homeserver answered an outbound request with an error
        ├── MForbidden               M_FORBIDDEN
        ├── MUserInUse               M_USER_IN_USE
        ├── MRoomInUse               M_ROOM_IN_USE
        ├── MNotFound                M_NOT_FOUND
        ├── MLimitExceeded           M_LIMIT_EXCEEDED (carries retry_after_ms)
        └── MUnknownToken            M_UNKNOWN_TOKEN
    MatrixConnectionError            the homeserver could not be reached at all

Unknown errcodes stay `MatrixRequestError` with the errcode kept, never swallowed.
"""

from __future__ import annotations

from typing import Any, ClassVar


class MatrixError(Exception):
    """An error with an HTTP status, a Matrix errcode and a human-readable message."""

    def __init__(self, status: int, errcode: str, message: str, /, **extra: Any) -> None:
        super().__init__(f"{status} {errcode}: {message}")
        self.status = status
        self.errcode = errcode
        self.message = message
        self.extra = extra

    def to_json(self) -> dict[str, Any]:
        return {"errcode": self.errcode, "error": self.message, **self.extra}


class MatrixRequestError(MatrixError):
    """The homeserver answered an outbound request with an error."""

    errcode_class: ClassVar[str] = ""

    @property
    def retryable(self) -> bool:
        return self.status >= 500 or self.status == 429


class MForbidden(MatrixRequestError):
    errcode_class = "M_FORBIDDEN"


class MUserInUse(MatrixRequestError):
    errcode_class = "M_USER_IN_USE"


class MRoomInUse(MatrixRequestError):
    errcode_class = "M_ROOM_IN_USE"


class MNotFound(MatrixRequestError):
    errcode_class = "M_NOT_FOUND"


class MUnknownToken(MatrixRequestError):
    errcode_class = "M_UNKNOWN_TOKEN"


class MLimitExceeded(MatrixRequestError):
    errcode_class = "M_LIMIT_EXCEEDED"

    @property
    def retry_after_ms(self) -> int | None:
        value = self.extra.get("retry_after_ms")
        return value if isinstance(value, int) and not isinstance(value, bool) else None


_BY_ERRCODE: dict[str, type[MatrixRequestError]] = {
    cls.errcode_class: cls
    for cls in (MForbidden, MUserInUse, MRoomInUse, MNotFound, MUnknownToken, MLimitExceeded)
}


def error_from_response(status: int, body: Any) -> MatrixRequestError:
    """Map a homeserver error response onto the matching exception class."""
    if isinstance(body, dict):
        errcode = str(body.get("errcode") or "M_UNKNOWN")
        message = str(body.get("error") or "")
        extra = {k: v for k, v in body.items() if k not in ("errcode", "error")}
    else:
        errcode, message, extra = "M_UNKNOWN", str(body)[:500], {}
    cls = _BY_ERRCODE.get(errcode, MatrixRequestError)
    return cls(status, errcode, message, **extra)


class MatrixConnectionError(Exception):
    """The homeserver could not be reached (refused, reset, timed out)."""
