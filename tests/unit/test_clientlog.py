"""What clients cost the log: one line per source and interval, and how many were held back."""

from __future__ import annotations

import logging

import pytest

from appservice.clientlog import ThrottledLog

MESSAGE = "%s: the client closed the connection"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "test.clientlog"]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def throttled(clock: Clock, caplog: pytest.LogCaptureFixture) -> ThrottledLog:
    caplog.set_level(logging.INFO, logger="test.clientlog")
    return ThrottledLog(logging.getLogger("test.clientlog"), interval_s=60, max_lines=5, clock=clock)


def test_one_line_per_source_and_interval_then_the_count_held_back(
    throttled: ThrottledLog, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    written = [throttled.log(logging.INFO, "10.0.0.1", MESSAGE, "PUT") for _ in range(20)]
    assert written == [True] + [False] * 19
    assert _lines(caplog) == ["PUT: the client closed the connection"]
    clock.now += 59
    assert not throttled.log(logging.INFO, "10.0.0.1", MESSAGE, "PUT")
    clock.now += 1
    assert throttled.log(logging.INFO, "10.0.0.1", MESSAGE, "PUT")
    assert _lines(caplog)[-1] == (
        "PUT: the client closed the connection (20 more like it from the same address held back)"
    )
    clock.now += 60
    assert throttled.log(logging.INFO, "10.0.0.1", MESSAGE, "PUT")
    assert _lines(caplog)[-1] == "PUT: the client closed the connection"


def test_sources_and_kinds_of_line_are_throttled_apart(
    throttled: ThrottledLog, caplog: pytest.LogCaptureFixture
) -> None:
    assert throttled.log(logging.INFO, "10.0.0.1", MESSAGE, "PUT")
    assert throttled.log(logging.INFO, "10.0.0.2", MESSAGE, "PUT")
    assert throttled.log(logging.WARNING, "10.0.0.1", "Transaction %s: malformed", "t1")
    assert not throttled.log(logging.WARNING, "10.0.0.1", "Transaction %s: malformed", "t2")
    assert len(_lines(caplog)) == 3


def test_many_sources_at_once_cost_at_most_the_budget_per_interval(
    throttled: ThrottledLog, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    written = [throttled.log(logging.INFO, f"10.0.1.{i}", MESSAGE, "GET") for i in range(50)]
    assert written.count(True) == 5 and len(_lines(caplog)) == 5
    clock.now += 60
    assert throttled.log(logging.INFO, "10.0.2.1", MESSAGE, "GET")
    assert _lines(caplog)[-1] == (
        "GET: the client closed the connection (45 lines from many addresses held back before)"
    )


def test_sources_remembered_are_bounded(clock: Clock, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="test.clientlog")
    throttled = ThrottledLog(
        logging.getLogger("test.clientlog"), interval_s=60, max_sources=3, max_lines=100, clock=clock
    )
    for i in range(3):
        throttled.log(logging.INFO, f"10.0.1.{i}", MESSAGE, "GET")
    assert not throttled.log(logging.INFO, "10.0.1.0", MESSAGE, "GET")  # remembered
    throttled.log(logging.INFO, "10.0.1.3", MESSAGE, "GET")
    # A fourth source pushed out the one heard from least recently (10.0.1.1), not 10.0.1.0.
    assert not throttled.log(logging.INFO, "10.0.1.0", MESSAGE, "GET")
    assert throttled.log(logging.INFO, "10.0.1.1", MESSAGE, "GET")


def test_a_level_the_logger_drops_costs_nothing(clock: Clock, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="test.clientlog")
    throttled = ThrottledLog(logging.getLogger("test.clientlog"), clock=clock)
    assert not throttled.log(logging.INFO, "10.0.0.1", MESSAGE, "GET")
    assert throttled.log(logging.WARNING, "10.0.0.1", MESSAGE, "GET")
    assert _lines(caplog) == ["GET: the client closed the connection"]
