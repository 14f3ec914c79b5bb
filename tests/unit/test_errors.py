"""Matrix errors as values: errcode → class, unknown codes kept, retry hints."""

from __future__ import annotations

from typing import Any

import pytest

from appservice.errors import (
    MatrixError,
    MatrixRequestError,
    MForbidden,
    MLimitExceeded,
    MNotFound,
    MRoomInUse,
    MUnknownToken,
    MUserInUse,
    error_from_response,
)


@pytest.mark.parametrize(
    ("errcode", "cls"),
    [
        ("M_FORBIDDEN", MForbidden),
        ("M_USER_IN_USE", MUserInUse),
        ("M_ROOM_IN_USE", MRoomInUse),
        ("M_NOT_FOUND", MNotFound),
        ("M_UNKNOWN_TOKEN", MUnknownToken),
        ("M_LIMIT_EXCEEDED", MLimitExceeded),
    ],
)
def test_known_errcodes_map_to_their_class(errcode: str, cls: type[MatrixRequestError]) -> None:
    error = error_from_response(400, {"errcode": errcode, "error": "nope"})

    assert type(error) is cls
    assert error.errcode == errcode
    assert error.message == "nope"
    assert error.status == 400
    assert str(error) == f"400 {errcode}: nope"


def test_unknown_errcode_is_kept_on_the_base_class() -> None:
    error = error_from_response(400, {"errcode": "M_EXCLUSIVE", "error": "That alias is reserved"})

    assert type(error) is MatrixRequestError
    assert error.errcode == "M_EXCLUSIVE"
    assert error.message == "That alias is reserved"


def test_vendor_errcode_is_kept() -> None:
    error = error_from_response(403, {"errcode": "ORG.EXAMPLE.CUSTOM", "error": "x"})

    assert error.errcode == "ORG.EXAMPLE.CUSTOM"
    assert type(error) is MatrixRequestError


def test_extra_keys_are_kept_and_rendered() -> None:
    body = {"errcode": "M_FORBIDDEN", "error": "no", "soft_logout": True}
    error = error_from_response(403, body)

    assert error.extra == {"soft_logout": True}
    assert error.to_json() == body


@pytest.mark.parametrize("body", [{}, {"errcode": None}, {"errcode": ""}, {"error": "only a message"}])
def test_missing_errcode_becomes_m_unknown(body: dict[str, Any]) -> None:
    error = error_from_response(500, body)

    assert error.errcode == "M_UNKNOWN"
    assert type(error) is MatrixRequestError


@pytest.mark.parametrize("body", ["<html>502 Bad Gateway</html>", None, ["x"], 12])
def test_non_json_object_bodies_become_m_unknown_with_the_text(body: Any) -> None:
    error = error_from_response(502, body)

    assert error.errcode == "M_UNKNOWN"
    assert error.message == str(body)
    assert error.extra == {}


def test_long_non_json_bodies_are_truncated() -> None:
    error = error_from_response(502, "x" * 10_000)

    assert error.message == "x" * 500


def test_retry_after_ms() -> None:
    error = error_from_response(429, {"errcode": "M_LIMIT_EXCEEDED", "error": "slow", "retry_after_ms": 1500})

    assert isinstance(error, MLimitExceeded)
    assert error.retry_after_ms == 1500


@pytest.mark.parametrize("value", [None, "1500", 1.5])
def test_retry_after_ms_that_is_not_an_integer_is_ignored(value: Any) -> None:
    error = error_from_response(429, {"errcode": "M_LIMIT_EXCEEDED", "retry_after_ms": value})

    assert isinstance(error, MLimitExceeded)
    assert error.retry_after_ms is None


def test_retry_after_ms_absent() -> None:
    error = error_from_response(429, {"errcode": "M_LIMIT_EXCEEDED"})

    assert isinstance(error, MLimitExceeded)
    assert error.retry_after_ms is None


def test_retry_after_ms_refuses_booleans() -> None:
    error = error_from_response(429, {"errcode": "M_LIMIT_EXCEEDED", "retry_after_ms": True})

    assert isinstance(error, MLimitExceeded)
    assert error.retry_after_ms is None


@pytest.mark.parametrize(
    ("status", "retryable"),
    [
        (400, False),
        (401, False),
        (403, False),
        (404, False),
        (429, True),
        (500, True),
        (502, True),
        (504, True),
    ],
)
def test_retryable(status: int, retryable: bool) -> None:
    assert error_from_response(status, {"errcode": "M_WHATEVER"}).retryable is retryable


def test_rate_limit_is_retryable_through_its_class() -> None:
    assert error_from_response(429, {"errcode": "M_LIMIT_EXCEEDED"}).retryable


def test_class_hierarchy() -> None:
    for cls in (MForbidden, MUserInUse, MRoomInUse, MNotFound, MUnknownToken, MLimitExceeded):
        assert issubclass(cls, MatrixRequestError)
    assert issubclass(MatrixRequestError, MatrixError)


def test_inbound_error_renders_as_matrix_json() -> None:
    error = MatrixError(403, "M_FORBIDDEN", "Bad token")

    assert error.to_json() == {"errcode": "M_FORBIDDEN", "error": "Bad token"}
    assert error.status == 403


@pytest.mark.parametrize(
    "body",
    [
        {"message": "Bad gateway"},  # common reverse-proxy error shape
        {"errcode": "M_UNKNOWN", "error": "x", "status": "error"},
    ],
)
def test_bodies_with_status_or_message_keys_still_become_errors(body: dict[str, Any]) -> None:
    error = error_from_response(502, body)

    assert isinstance(error, MatrixRequestError)
    assert error.status == 502
