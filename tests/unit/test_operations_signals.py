"""What operators see: /readyz's verdict, and library lines that repeat."""

from __future__ import annotations

import logging

from prometheus_client import generate_latest

from deploy.stack import lags_of
from shared.core.logging import RepeatedLines
from shared.core.metrics import Metrics
from shared.web.service import Readiness


async def _passes() -> bool:
    return True


async def _fails() -> bool:
    return False


async def _raises() -> bool:
    raise TimeoutError


async def test_a_failing_dependency_the_service_can_answer_without_only_degrades_it() -> None:
    """With Kafka away a service still answers reads and takes commands into its outbox:
    taking it out of rotation would make the outage total. Without its database it cannot."""
    metrics = Metrics("spending")
    readiness = Readiness(metrics)
    readiness.add("database", _passes, needed=True)
    readiness.add("relay", _fails, needed=False)
    readiness.add("consumer:spending.views", _raises, needed=False)
    status, checks = await readiness.report()
    assert status == "degraded"
    assert checks == {
        "database": True,
        "relay": False,
        "consumer:spending.views": False,
        "accepting": True,
    }
    text = generate_latest(metrics.registry).decode()
    assert 'ledger_readiness_check{check="relay"} 0.0' in text
    assert 'ledger_readiness_check{check="database"} 1.0' in text

    readiness.add("database", _fails, needed=True)
    assert (await readiness.report())[0] == "not_ready"
    readiness.add("database", _passes, needed=True)
    readiness.add("relay", _passes, needed=False)
    readiness.add("consumer:spending.views", _passes, needed=False)
    assert (await readiness.report())[0] == "ready"
    readiness.draining = True
    assert (await readiness.report())[0] == "not_ready"


class _Kept(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_a_line_repeated_by_a_library_is_written_once_per_interval_with_a_count() -> None:
    """While Kafka was away each service wrote 4,000 to 9,000 aiokafka lines a minute."""
    now = [0.0]
    kept = _Kept()
    kept.addFilter(RepeatedLines(interval=60.0, clock=lambda: now[0]))
    logger = logging.getLogger("aiokafka.test-repeated")
    logger.propagate = False
    logger.addHandler(kept)
    try:
        for attempt in range(500):
            now[0] = attempt * 0.1
            logger.warning("Unable connect to node with id %s: %s", 1, "refused")
        logger.warning("Something else")
        assert [record.getMessage() for record in kept.records] == [
            "Unable connect to node with id 1: refused",
            "Something else",
        ]
        now[0] = 61.0
        logger.warning("Unable connect to node with id %s: %s", 1, "refused")
        assert getattr(kept.records[-1], "held_back", None) == 499
        # The benign line every consumer hears while its coordinator starts: not an error.
        # aiokafka passes the error as an argument of its template (a real outage showed
        # the line still at error level, the filter having looked at the template alone).
        logger.error(
            "Group Coordinator Request failed: %s",
            "[Error 15] GroupCoordinatorNotAvailableError",
        )
        assert kept.records[-1].levelname == "WARNING"

    finally:
        logger.removeHandler(kept)


def test_make_status_reads_the_lags_from_a_services_metrics() -> None:
    metrics = Metrics("approval")
    metrics.relay_lag_seconds.set(4.25)
    metrics.consumer_lag.labels("approval.requests", "ledger.spending", "0").set(3)
    metrics.consumer_lag.labels("approval.requests", "ledger.spending", "1").set(4)
    assert lags_of(generate_latest(metrics.registry).decode()) == {
        "relay": 4.25,
        "consumers": 7.0,
    }
    # A service that publishes nothing has no relay, and says nothing of one.
    reporting = Metrics("reporting", publishes=False)
    assert lags_of(generate_latest(reporting.registry).decode()) == {}


def test_retention_erasures_are_exported_only_by_the_service_that_erases() -> None:
    """Every service exported ledger_retention_erasures_total 0, though only allocation's
    retention sweep can move it."""
    spending = generate_latest(Metrics("spending").registry).decode()
    assert "ledger_retention_erasures" not in spending
