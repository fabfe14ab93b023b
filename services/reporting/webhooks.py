"""Webhooks for case systems: subscriptions, the deliveries the topics make, and signing.

A case system's subscription names its pilot, the event types it wants and its URL; the
ledger makes its signing secret (Standard Webhooks' ``whsec_`` form), shows it once and keeps
it only sealed (:mod:`shared.core.personal`, subject ``webhook:<id>``). The
``reporting.webhooks`` consumer reads every topic and, in the transaction that moves its
offsets, records one delivery for each live subscription an event matches: however often
Kafka redelivers, a delivery is recorded once. :mod:`.deliveries` sends them, signed as the
Standard Webhooks specification says, never from a request's path.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from collections.abc import Sequence
from dataclasses import replace
from uuid import UUID

from asyncpg import Record
from yarl import URL

from services.reporting.destinations import Destinations
from services.reporting.schemas import (
    EVENT_TYPES,
    DeliveryList,
    DeliveryQuery,
    DeliveryView,
    NewSubscriptionView,
    ReplayBody,
    ReplayView,
    SubscriptionBody,
    SubscriptionList,
    SubscriptionView,
)
from shared.contracts import TOPICS
from shared.core.commands import CommandResult
from shared.core.db import Connection
from shared.core.errors import ConflictError, NotFoundError
from shared.core.events import Envelope, canonical_json
from shared.core.personal import Sealer
from shared.web.http import Caller
from shared.web.service import ConsumerSpec, ServiceCore

__all__ = [
    "CONSUMER",
    "OPENAPI_WEBHOOKS",
    "SECRET_PREFIX",
    "Webhooks",
    "enqueue",
    "enqueue_many",
    "new_secret",
    "secret_subject",
    "signature",
]

SECRET_PREFIX = "whsec_"  # noqa: S105 - the form of a secret, not one

# A batch's events, each for every live subscription of its pilot that wants it, queued in
# the events' order (a delivery's position orders a family's deliveries).
_ENQUEUE = """
INSERT INTO webhook_deliveries
    (subscription_id, event_id, event_type, ordering_key, family_id, body, next_attempt_at)
SELECT s.subscription_id, e.event_id, e.event_type, e.ordering_key, e.family_id, e.body, NULL
FROM unnest($1::text[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[])
    WITH ORDINALITY AS e(pilot_id, event_id, event_type, ordering_key, family_id, body, n)
JOIN webhook_subscriptions s ON s.pilot_id = e.pilot_id AND s.removed_at IS NULL
    AND e.event_type = ANY(s.event_types)
ORDER BY e.n, s.subscription_id
ON CONFLICT (subscription_id, event_id) DO NOTHING
"""
_CREATE = """
INSERT INTO webhook_subscriptions
    (subscription_id, pilot_id, url, event_types, secret, created_at, created_by)
VALUES ($1, $2, $3, $4, $5, $6, $7)
RETURNING *
"""
_LIST = "SELECT * FROM webhook_subscriptions WHERE pilot_id = $1 ORDER BY created_at"
_ONE = "SELECT * FROM webhook_subscriptions WHERE pilot_id = $1 AND subscription_id = $2"
_REMOVE = """
UPDATE webhook_subscriptions SET removed_at = coalesce(removed_at, $3)
WHERE pilot_id = $1 AND subscription_id = $2 RETURNING *
"""
_DELIVERIES = """
SELECT * FROM webhook_deliveries
WHERE subscription_id = $1 AND position > $2 AND ($3::text IS NULL OR status = $3)
ORDER BY position LIMIT $4
"""
_REPLAY = """
UPDATE webhook_deliveries
SET status = 'pending', attempts = 0, first_attempt_at = NULL, next_attempt_at = NULL,
    lease_until = NULL, delivered_at = NULL, last_error = NULL
WHERE subscription_id = $1 AND position >= $2
"""

_HEADER = {"type": "string"}
# What a subscriber receives, as OpenAPI 3.1 describes requests a service sends.
OPENAPI_WEBHOOKS = {
    "ledgerEvent": {
        "post": {
            "summary": "One event a subscription asked for, POSTed to its url",
            "description": "The body is the event as a CloudEvent 1.0 in structured mode, "
            "exactly as on Kafka (its data's schema per type is in /asyncapi.json; events "
            "recorded before wire format 2 keep their format-1 form). Verify "
            "webhook-signature before trusting it, and deduplicate on webhook-id: delivery is "
            "at least once. A family's events come in order, one at a time. Answer 2xx once "
            "it is kept; anything else (or no answer within 10 s) is retried, waits doubling "
            "from 5 s to at most 1 hour, for 24 hours, after which the delivery is dead.",
            "operationId": "receiveLedgerEvent",
            # Not the subscriptions' tag: this is the subscriber's side (generators that
            # group operations by tag would put both in one class and lose one).
            "tags": ["subscriber"],
            "parameters": [
                {
                    "name": "webhook-id",
                    "in": "header",
                    "required": True,
                    "schema": _HEADER,
                    "description": "The event's id: the same on every retry and replay.",
                },
                {
                    "name": "webhook-timestamp",
                    "in": "header",
                    "required": True,
                    "schema": {"type": "string", "pattern": "^[0-9]+$"},
                    "description": "When it was sent, in Unix seconds (refuse ones far off).",
                },
                {
                    "name": "webhook-signature",
                    "in": "header",
                    "required": True,
                    "schema": _HEADER,
                    "description": "v1, then base64 of HMAC-SHA256 of "
                    "'<webhook-id>.<webhook-timestamp>.<body>' under the secret's base64-decoded "
                    "bytes (after whsec_), as the Standard Webhooks specification says.",
                },
            ],
            "requestBody": {
                "required": True,
                "content": {
                    "application/cloudevents+json": {
                        "schema": {
                            "type": "object",
                            "properties": {
                                "specversion": {"const": "1.0"},
                                "id": {"type": "string", "format": "uuid"},
                                "type": {"type": "string", "enum": list(EVENT_TYPES)},
                                "source": {"type": "string"},
                                "time": {"type": "string", "format": "date-time"},
                                "pilotid": {"type": "string"},
                                "familyid": {"type": "string"},
                                "streamid": {"type": "string"},
                                "streamversion": {"type": "integer", "minimum": 1},
                                "data": {"type": "object"},
                            },
                            "required": ["specversion", "id", "type", "source", "time", "data"],
                        }
                    }
                },
            },
            "responses": {
                "2XX": {"description": "Kept: the delivery is done."},
                "default": {"description": "Not kept: it is sent again later."},
            },
        }
    }
}


def new_secret() -> str:
    """A signing secret: 32 random bytes, base64, prefixed as Standard Webhooks does."""
    return SECRET_PREFIX + base64.b64encode(os.urandom(32)).decode()


def signature(secret: str, message_id: str, timestamp: int, body: str) -> str:
    """The ``webhook-signature`` of a message: HMAC-SHA256 of ``id.timestamp.body``."""
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    signed = f"{message_id}.{timestamp}.{body}".encode()
    return "v1," + base64.b64encode(hmac.digest(key, signed, hashlib.sha256)).decode()


def secret_subject(subscription_id: UUID) -> str:
    """The subject whose key seals a subscription's secret."""
    return f"webhook:{subscription_id}"


async def enqueue(conn: Connection, envelope: Envelope) -> None:
    """Record a delivery of the event for every live subscription of its pilot that wants it."""
    await enqueue_many(conn, [envelope])


async def enqueue_many(conn: Connection, envelopes: Sequence[Envelope]) -> None:
    """Record the deliveries of a batch's events, in their order, in one statement."""
    await conn.execute(
        _ENQUEUE,
        [e.pilot_id for e in envelopes],
        [e.id for e in envelopes],
        [e.type for e in envelopes],
        # Per family in order; an event of no family (a pilot's) keeps its stream's order.
        [e.family_id or e.stream_id for e in envelopes],
        [e.family_id for e in envelopes],
        # The bytes the relay published.
        [canonical_json(e.to_json_dict()).decode() for e in envelopes],
    )


CONSUMER = ConsumerSpec("reporting.webhooks", TOPICS, enqueue, enqueue_many)


class Webhooks:
    """An administrator's management of a pilot's subscriptions and their deliveries."""

    def __init__(self, core: ServiceCore, destinations: Destinations) -> None:
        self._core = core
        self._sealer = Sealer(core.custody)
        self._destinations = destinations

    async def create(self, caller: Caller, pilot_id: str, body: SubscriptionBody) -> CommandResult:
        """A new subscription, with its secret: shown when it is made, and again to a retry
        with the same Idempotency-Key (the stored answer keeps the secret only sealed). 422
        ``webhook_url_not_allowed`` for a URL webhooks may not reach (:mod:`.destinations`)."""
        url = URL(str(body.url))
        await self._destinations.check(url.host or "", url.port or 443)
        subscription_id = self._core.ids()

        async def handle(conn: Connection) -> CommandResult:
            sealed = await self._sealer.seal(conn, secret_subject(subscription_id), new_secret())
            row = await conn.fetchrow(
                _CREATE,
                subscription_id,
                pilot_id,
                str(body.url),
                list(dict.fromkeys(body.event_types)),
                sealed,
                self._core.clock(),
                caller.principal.sub,
            )
            assert row is not None
            return CommandResult(201, {**_view(row).model_dump(mode="json"), "secret": sealed})

        result = await self._core.commands.run(handle, caller.idempotency)
        made = NewSubscriptionView.model_validate(result.body)
        async with self._core.pool.acquire() as conn:
            secret = await self._sealer.open(
                conn, secret_subject(made.subscription_id), made.secret
            )
        shown = made.model_copy(update={"secret": secret})
        return replace(result, body=shown.model_dump(mode="json"))

    async def list(self, pilot_id: str) -> SubscriptionList:
        """The pilot's subscriptions, removed ones too; never their secrets."""
        async with self._core.pool.acquire() as conn:
            rows = await conn.fetch(_LIST, pilot_id)
        return SubscriptionList(subscriptions=tuple(_view(row) for row in rows))

    async def remove(self, pilot_id: str, subscription_id: UUID) -> SubscriptionView:
        """Stop a subscription: nothing more is recorded or sent, and its secret is erased."""
        async with self._core.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(_REMOVE, pilot_id, subscription_id, self._core.clock())
            if row is None:
                raise NotFoundError("no such subscription")
            await self._sealer.erase(conn, secret_subject(subscription_id))
        return _view(row)

    async def deliveries(
        self, pilot_id: str, subscription_id: UUID, query: DeliveryQuery
    ) -> DeliveryList:
        """A subscription's deliveries after a position, oldest first."""
        async with self._core.pool.acquire() as conn:
            await _subscription(conn, pilot_id, subscription_id)
            rows = await conn.fetch(
                _DELIVERIES, subscription_id, query.after, query.status, query.limit
            )
        return DeliveryList(deliveries=tuple(_delivery(row) for row in rows))

    async def replay(self, pilot_id: str, subscription_id: UUID, body: ReplayBody) -> ReplayView:
        """Send again every delivery from a position on (dead, delivered or pending), in order."""
        async with self._core.pool.acquire() as conn:
            row = await _subscription(conn, pilot_id, subscription_id)
            if row["removed_at"] is not None:
                raise ConflictError("the subscription is removed; nothing is sent to it")
            result = await conn.execute(_REPLAY, subscription_id, body.from_position)
        return ReplayView(replayed=int(result.split()[-1]))


async def _subscription(conn: Connection, pilot_id: str, subscription_id: UUID) -> Record:
    row = await conn.fetchrow(_ONE, pilot_id, subscription_id)
    if row is None:
        raise NotFoundError("no such subscription")
    return row


def _view(fields: Record) -> SubscriptionView:
    return SubscriptionView(
        subscription_id=fields["subscription_id"],
        pilot_id=fields["pilot_id"],
        url=fields["url"],
        event_types=tuple(fields["event_types"]),
        created_at=fields["created_at"],
        created_by=fields["created_by"],
        removed_at=fields["removed_at"],
    )


def _delivery(fields: Record) -> DeliveryView:
    return DeliveryView(
        position=fields["position"],
        event_id=fields["event_id"],
        event_type=fields["event_type"],
        family_id=fields["family_id"],
        status=fields["status"],
        attempts=fields["attempts"],
        next_attempt_at=None if fields["status"] != "pending" else fields["next_attempt_at"],
        delivered_at=fields["delivered_at"],
        last_error=fields["last_error"],
    )
