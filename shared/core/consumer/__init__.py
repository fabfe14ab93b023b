"""Consumers: apply records of other services' topics to a service's database, one effect each.

Each partition's batch is applied in one PostgreSQL transaction (by a consumer's batch
handler, when it has one, in a few set-based statements) that also advances the
stored offset (``consumer_offsets``, locked for the batch, sought on assignment) and each
stream's last applied version (``consumer_streams``). Redeliveries are dropped by version.

A record that cannot be the event it claims (not an event at all, another topic's type or
stream, a hash that does not match) is rejected: dead-lettered and parked under a key of
its own, holding nothing back. An event that cannot be applied (a gap in its stream, a
schema version newer than the consumer reads, a handler error that is not transient) goes
to the dead-letter topic with its origin in headers, and is parked in ``consumer_parked``.
A ledger must not apply a family's later events over a missing one, so every later record
with the same key (the same family) is parked behind it, while other families' records in
the partition keep moving. Parked records are tried again, in order, when the consumer
starts (after a fix is deployed), every minute while it runs, within seconds of an
operator's request, and when :meth:`ConsumerRunner.retry_parked` is called; the first that
still fails keeps the rest of its family parked (a gap lets the pass look further on for
the missing version). An operator lists, retries and releases them with ``ledger
deadletters`` (:mod:`.decisions`).

One module per job:

- :mod:`.batches`: one partition's batch in one transaction (versions, parking, dead letters);
- :mod:`.runner`: the live loop in a consumer group, rebalances;
- :mod:`.deadletters`: publishing parked records to the dead-letter topic, surviving failures;
- :mod:`.parking`: trying parked records again;
- :mod:`.decisions`: an operator's retry or release of a parked record, and its record;
- :mod:`.catchup`: reading to exact offsets outside any group (rebuilds);
- :mod:`.lag`: the lag gauges of the partitions a replica holds.
"""

from __future__ import annotations

from shared.core.consumer.batches import BatchHandler, EventHandler
from shared.core.consumer.runner import ConsumerRunner

__all__ = ["BatchHandler", "ConsumerRunner", "EventHandler"]
