"""Sending webhook deliveries: signed, in order per family, retried with back-off, then dead.

The dispatcher claims, with a lease, the oldest pending delivery of each ordering key (a
family) whose time has come, so that two replicas never send the same delivery at once and a
replica that dies mid-send lets go when the lease ends. It keeps a number of sends in
flight, claiming more as each ends, and takes pilots in turns with a share each, so that
one pilot's slow receivers never hold up another pilot's deliveries. It POSTs each as a CloudEvent
(structured mode), signed as the Standard Webhooks specification says, and records the
outcome:

- a 2xx: delivered, and the family's next event goes next;
- anything else (another status, a redirect, a timeout, a refused connection): tried again
  after :func:`backoff`, until the retry window (24 hours by default) has passed since the
  first attempt; then dead, listed in its subscription's deliveries and counted in metrics,
  and the family's later events go on. A replay sends it again.

At least once: a receiver whose 2xx was lost on the way back gets the event again, with the
same ``webhook-id``, which is how receivers deduplicate.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

import aiohttp
import asyncpg
import structlog
from yarl import URL

from services.reporting.destinations import Destinations, GuardedResolver
from services.reporting.webhooks import secret_subject, signature
from shared.core.background import BackgroundTask
from shared.core.custody import KeyCustody
from shared.core.metrics import Metrics
from shared.core.personal import ERASED, Sealer

__all__ = ["CLOUDEVENTS_JSON", "Dispatcher", "RetryPolicy", "backoff"]

CLOUDEVENTS_JSON = "application/cloudevents+json"
_LEASE = timedelta(minutes=2)  # longer than a send may take (the timeout), with room
_SENDING_LIMIT = 32  # deliveries in flight at once from one replica
_PILOT_LIMIT = 8  # of which one pilot's at most: its slow receivers never take every slot
# The oldest pending delivery of each ordering key, due and not being sent, taken in turns
# across pilots (each pilot's oldest first, then each one's second, ...), a pilot's share
# less what it has in flight already.
_CLAIM = """
WITH heads AS (
    SELECT DISTINCT ON (subscription_id, ordering_key)
        position, subscription_id, next_attempt_at, lease_until
    FROM webhook_deliveries WHERE status = 'pending'
    ORDER BY subscription_id, ordering_key, position
), sending AS (
    SELECT s.pilot_id, count(*) AS n FROM webhook_deliveries d
    JOIN webhook_subscriptions s USING (subscription_id)
    WHERE d.status = 'pending' AND d.lease_until > $1 GROUP BY s.pilot_id
), turns AS (
    SELECT heads.position, s.pilot_id,
        row_number() OVER (PARTITION BY s.pilot_id ORDER BY heads.position) AS turn
    FROM heads JOIN webhook_subscriptions s USING (subscription_id)
    WHERE s.removed_at IS NULL
      AND (heads.next_attempt_at IS NULL OR heads.next_attempt_at <= $1)
      AND (heads.lease_until IS NULL OR heads.lease_until <= $1)
), due AS (
    SELECT turns.position FROM turns LEFT JOIN sending USING (pilot_id)
    WHERE turns.turn <= $4 - coalesce(sending.n, 0)
    ORDER BY turns.turn, turns.position LIMIT $3
)
UPDATE webhook_deliveries d SET lease_until = $2
FROM due, webhook_subscriptions s
WHERE d.position = due.position AND s.subscription_id = d.subscription_id
  AND d.status = 'pending' AND (d.lease_until IS NULL OR d.lease_until <= $1)
RETURNING d.position, d.subscription_id, d.event_id, d.body, d.attempts, d.first_attempt_at,
    s.url, s.secret
"""
_DELIVERED = """
UPDATE webhook_deliveries SET status = 'delivered', attempts = attempts + 1,
    first_attempt_at = coalesce(first_attempt_at, $2), delivered_at = $2, lease_until = NULL,
    last_error = NULL
WHERE position = $1
"""
_FAILED = """
UPDATE webhook_deliveries SET status = $3, attempts = attempts + 1,
    first_attempt_at = coalesce(first_attempt_at, $2), next_attempt_at = $4, lease_until = NULL,
    last_error = $5
WHERE position = $1
"""


@dataclass(frozen=True)
class RetryPolicy:
    """How long a failing delivery is retried, and how the waits between tries grow."""

    window: timedelta = timedelta(hours=24)
    first_retry: timedelta = timedelta(seconds=5)
    max_backoff: timedelta = timedelta(hours=1)


def backoff(policy: RetryPolicy, attempts: int) -> timedelta:
    """The wait after the ``attempts``-th failed try: doubling from the first, capped."""
    doubling = 1 << min(max(attempts - 1, 0), 40)
    return min(policy.first_retry * doubling, policy.max_backoff)


@dataclass(frozen=True)
class _Claimed:
    position: int
    subscription_id: UUID
    event_id: UUID
    body: str
    attempts: int
    first_attempt_at: datetime | None
    url: str
    sealed_secret: str


class Dispatcher(BackgroundTask):
    """Sends due webhook deliveries until stopped."""

    def __init__(
        self,
        pool: asyncpg.Pool[asyncpg.Record],
        custody: KeyCustody,
        metrics: Metrics,
        clock: Callable[[], datetime],
        *,
        policy: RetryPolicy,
        timeout_seconds: float,
        poll_seconds: float,
        destinations: Destinations,
    ) -> None:
        super().__init__("webhook-dispatcher")
        self._destinations = destinations
        self._pool = pool
        self._sealer = Sealer(custody)
        self._metrics = metrics
        # Every outcome at 0 from the start: increase() sees the first of each.
        for outcome in ("delivered", "retried", "dead"):
            metrics.webhook_deliveries.labels(outcome)
        self._clock = clock
        self._policy = policy
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._poll_seconds = poll_seconds
        self._log = structlog.get_logger().bind(component="webhooks")

    async def _run(self) -> None:
        """Keep up to :data:`_SENDING_LIMIT` sends in flight, claiming more as each ends: a
        slow receiver holds its own slot, never a whole round of others' (96 slow
        subscriptions of one pilot delayed another pilot's delivery from 0.5 s to 131 s
        when each round of 32 waited for its slowest send)."""
        sending: set[asyncio.Task[None]] = set()
        connector = aiohttp.TCPConnector(resolver=GuardedResolver(self._destinations))
        async with aiohttp.ClientSession(timeout=self._timeout, connector=connector) as session:
            while not self._stopping:
                claimed: list[_Claimed] = []
                free = _SENDING_LIMIT - len(sending)
                try:
                    claimed = await self._claim(free) if free else []
                    secrets = await self._secrets(claimed)
                except Exception as error:  # noqa: BLE001 - a database outage: try again soon
                    self._log.warning("webhook_dispatch_failed", error=repr(error))
                    claimed = []
                for item in claimed:
                    if item.subscription_id in secrets:
                        task = asyncio.create_task(
                            self._send(session, item, secrets[item.subscription_id])
                        )
                        sending.add(task)
                        task.add_done_callback(self._sent(sending))
                if not claimed:
                    await self._pause(self._poll_seconds)  # cut short when a send ends
            await asyncio.gather(*sending, return_exceptions=True)

    def _sent(self, sending: set[asyncio.Task[None]]) -> Callable[[asyncio.Task[None]], None]:
        def done(task: asyncio.Task[None]) -> None:
            sending.discard(task)
            if not task.cancelled() and task.exception() is not None:
                self._log.warning("webhook_send_failed", error=repr(task.exception()))
            self._wake()  # a slot is free: claim again now

        return done

    async def _claim(self, wanted: int) -> list[_Claimed]:
        now = self._clock()
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(_CLAIM, now, now + _LEASE, wanted, _PILOT_LIMIT)
        return [
            _Claimed(
                position=row["position"],
                subscription_id=row["subscription_id"],
                event_id=row["event_id"],
                body=row["body"],
                attempts=row["attempts"],
                first_attempt_at=row["first_attempt_at"],
                url=row["url"],
                sealed_secret=row["secret"],
            )
            for row in sorted(rows, key=lambda row: row["position"])
        ]

    async def _secrets(self, claimed: list[_Claimed]) -> dict[UUID, str]:
        """Each claimed subscription's secret, opened once for the round."""
        sealed = {item.subscription_id: item.sealed_secret for item in claimed}
        secrets: dict[UUID, str] = {}
        if sealed:
            async with self._pool.acquire() as conn:
                for subscription_id, secret in sealed.items():
                    opened = await self._sealer.open(conn, secret_subject(subscription_id), secret)
                    if opened is not None and opened != ERASED:  # else removed since the claim
                        secrets[subscription_id] = opened
        return secrets

    async def _send(self, session: aiohttp.ClientSession, item: _Claimed, secret: str) -> None:
        sent_at = self._clock()
        timestamp = int(sent_at.timestamp())
        message_id = str(item.event_id)
        headers = {
            "Content-Type": CLOUDEVENTS_JSON,
            "User-Agent": "ledger-webhooks",
            "webhook-id": message_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": signature(secret, message_id, timestamp, item.body),
        }
        error: str | None = None
        try:
            if not self._reachable(item.url):
                error = "address not allowed"
            else:
                async with session.post(
                    item.url, data=item.body.encode(), headers=headers, allow_redirects=False
                ) as response:
                    if not 200 <= response.status < 300:
                        error = f"answered {response.status}"
        except TimeoutError:
            error = "no answer in time"
        except (aiohttp.ClientError, OSError):
            # Never the failure's own text: it would say what is (not) listening where.
            error = "could not connect"
        await self._record(item, sent_at, error)

    def _reachable(self, url: str) -> bool:
        """False for a URL whose host is an address not allowed (a name is resolved, and
        checked, by the session's resolver)."""
        host = URL(url).host or ""
        try:
            return self._destinations.allows(ipaddress.ip_address(host.strip("[]")))
        except ValueError:
            return True

    async def _record(self, item: _Claimed, sent_at: datetime, error: str | None) -> None:
        async with self._pool.acquire() as conn:
            if error is None:
                await conn.execute(_DELIVERED, item.position, sent_at)
                self._metrics.webhook_deliveries.labels("delivered").inc()
                return
            attempts = item.attempts + 1
            first = item.first_attempt_at or sent_at
            dead = sent_at - first >= self._policy.window
            status = "dead" if dead else "pending"
            next_at = None if dead else sent_at + backoff(self._policy, attempts)
            await conn.execute(_FAILED, item.position, sent_at, status, next_at, error)
        self._metrics.webhook_deliveries.labels("dead" if dead else "retried").inc()
        log = self._log.error if dead else self._log.warning
        log(
            "webhook_dead" if dead else "webhook_retry",
            subscription_id=str(item.subscription_id),
            position=item.position,
            event_id=str(item.event_id),
            attempts=attempts,
            error=error,
        )
