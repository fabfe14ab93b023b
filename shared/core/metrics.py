"""Prometheus metrics of one service, in a registry of its own (no global state)."""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["Metrics"]

_LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    """Every metric a service exposes on ``/metrics``."""

    # One declaration per metric, in the order /metrics lists them: a table, not logic.
    def __init__(
        self, service: str, *, publishes: bool = True, version: str = "", revision: str = ""
    ) -> None:
        self.registry = CollectorRegistry()
        # The relay's metrics are exported only by a service that publishes (not reporting).
        relaying = self.registry if publishes else None
        self.http_requests = Counter(
            "ledger_http_requests",
            "HTTP requests by route and status.",
            ["method", "route", "status"],
            registry=self.registry,
        ).labels  # bound below per call; keeps the call sites short
        self.http_latency = Histogram(
            "ledger_http_request_duration_seconds",
            "HTTP request latency by route.",
            ["method", "route"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.events_appended = Counter(
            "ledger_events_appended",
            "Events appended to this service's store, by type (counted inside the writing "
            "transaction: the rare one that is rolled back afterwards is counted too).",
            ["type"],
            registry=self.registry,
        )
        self.events_published = Counter(
            "ledger_events_published",
            "Events the outbox relay published to Kafka.",
            registry=relaying,
        )
        self.relay_lag_seconds = Gauge(
            "ledger_relay_lag_seconds",
            "Age of the oldest committed event not yet on Kafka (0 when none waits).",
            registry=relaying,
        )
        self.consumer_lag = Gauge(
            "ledger_consumer_lag",
            "Records behind the end of each partition, per consumer.",
            ["consumer", "topic", "partition"],
            registry=self.registry,
        )
        self.events_consumed = Counter(
            "ledger_events_consumed",
            "Records a consumer applied (or recognised as already applied).",
            ["consumer", "topic"],
            registry=self.registry,
        )
        self.deadlettered = Counter(
            "ledger_deadlettered",
            "Records a consumer could not apply and sent to the dead-letter topic.",
            ["consumer", "topic"],
            registry=self.registry,
        )
        self.parked = Counter(
            "ledger_parked",
            "Records held back behind an earlier unapplied record of the same family.",
            ["consumer", "topic"],
            registry=self.registry,
        )
        self.idempotent_replays = Counter(
            "ledger_idempotent_replays",
            "Requests answered from a stored response because their Idempotency-Key was seen.",
            registry=self.registry,
        )
        self.webhook_deliveries = Counter(
            "ledger_webhook_deliveries",
            "Webhook sends by outcome: delivered, retried (failed, tried again later) or dead "
            "(still failing after the retry window).",
            ["outcome"],
            registry=self.registry,
        )
        self.clock_offset_seconds = Gauge(
            "ledger_clock_offset_seconds",
            "This process's clock less PostgreSQL's, measured every half minute (what it "
            "stamps on what it records is off by this much).",
            registry=self.registry,
        )
        self.readiness = Gauge(
            "ledger_readiness_check",
            "1 while a check behind /readyz passed when last asked (database, relay, each "
            "consumer and task, accepting), else 0.",
            ["check"],
            registry=self.registry,
        )
        self.keks_held = Gauge(
            "ledger_key_encryption_keys_held",
            "Key-encryption keys this instance holds: more than one while a rotation is under "
            "way, until the old ones are retired.",
            registry=self.registry,
        )
        self.info = Gauge(
            "ledger_service_info",
            "Constant 1, labelled with the service, its version and the commit it was built from.",
            ["service", "version", "revision"],
            registry=self.registry,
        )
        self.info.labels(service, version, revision).set(1)

    def consumes(self, consumer: str, topics: Sequence[str]) -> None:
        """Put a consumer's counters at 0 for each of its topics, before its first record:
        a counter that appears with its first increment is invisible to increase()."""
        for topic in topics:
            for counter in (self.events_consumed, self.deadlettered, self.parked):
                counter.labels(consumer, topic)
