"""Distributed traces (OpenTelemetry), off unless ``LEDGER_OTLP_ENDPOINT`` names a collector.

One request is one trace across the services: the HTTP server span of the request that
records an event is its parent; the event's W3C ``traceparent`` is kept with its outbox row
and published as a header of its Kafka record; each consumer applies the record in a span
of that trace, and what it records in turn (approval's decision, say) carries the trace on.
Off, the tracer is OpenTelemetry's no-op: no span is made and no ``traceparent`` is kept.
"""

from __future__ import annotations

import atexit
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.aiohttp_server import AioHttpServerInstrumentor
from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
from opentelemetry.propagate import extract, inject
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

__all__ = ["TRACEPARENT", "configure_tracing", "current_traceparent", "span_from"]

TRACEPARENT = "traceparent"
_TRACER = trace.get_tracer("ledger")
_exporting = False  # configure_tracing was given a collector


def configure_tracing(service: str, endpoint: str | None) -> None:
    """Export this process's spans over OTLP/HTTP to ``endpoint`` (nothing when None).

    Call before the service's application is made: the aiohttp instrumentation adds its
    middleware to applications made after it.
    """
    global _exporting  # noqa: PLW0603 - one switch per process, set before any span is made
    if endpoint is None:
        return
    _exporting = True
    provider = TracerProvider(resource=Resource.create({"service.name": f"ledger-{service}"}))
    exporter = OTLPSpanExporter(endpoint=f"{endpoint.rstrip('/')}/v1/traces")
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    atexit.register(provider.shutdown)  # what is still buffered is sent on the way out
    AioHttpServerInstrumentor().instrument()
    AsyncPGInstrumentor().instrument()  # type: ignore[no-untyped-call]  # untyped package


def current_traceparent() -> str | None:
    """The W3C ``traceparent`` of the span in progress, if a trace is being recorded."""
    carrier: dict[str, str] = {}
    inject(carrier)
    return carrier.get(TRACEPARENT)


@contextmanager
def span_from(
    traceparent: str | None, name: str, attributes: Mapping[str, str | int]
) -> Iterator[None]:
    """A consumer's span, in the trace ``traceparent`` names (a new one without it); none
    at all when no collector is configured (even a no-op span costs as much as applying an
    event in a batch)."""
    if not _exporting:
        yield
        return
    context = extract({TRACEPARENT: traceparent}) if traceparent else None
    with _TRACER.start_as_current_span(
        name, context=context, kind=trace.SpanKind.CONSUMER, attributes=dict(attributes)
    ):
        yield
