"""Webhooks: a real receiver on loopback verifies every signature with the ``standardwebhooks``
package, fails on purpose for a while, and gets every subscribed event exactly once after
deduplicating on ``webhook-id``, each family's in order; dead deliveries are listed and replay."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
from aiohttp import web
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from deploy.stack import free_port
from shared.core.events import canonical_json
from shared.core.settings import Settings
from tests.e2e.system import System, running_system
from tests.support import connect_service_db, wait_for

TYPES = [
    "family.enrolled",
    "family.budget_allocated",
    "spend_request.requested",
    "decision.approved",
]


@dataclass
class Receiver:
    """A case system's endpoint: what it was sent, what it kept, and how it answers."""

    url: str = ""
    secret: str = ""
    failing: bool = True  # answer 503 to everything
    lose_answers: int = 0  # keep the next N events but answer 500, as if the 2xx was lost
    sends: int = 0
    refused_signatures: int = 0
    kept: dict[str, dict[str, Any]] = field(default_factory=dict)  # by webhook-id
    order: list[str] = field(default_factory=list)  # webhook-ids as first kept
    timestamps: list[int] = field(default_factory=list)

    async def receive(self, request: web.Request) -> web.Response:
        self.sends += 1
        body = await request.text()
        try:
            event = Webhook(self.secret).verify(body, dict(request.headers))
        except WebhookVerificationError:
            self.refused_signatures += 1
            return web.Response(status=400)
        assert request.content_type == "application/cloudevents+json"
        # The event's canonical JSON: the bytes the relay published to Kafka.
        assert body == canonical_json(json.loads(body)).decode()
        self.timestamps.append(int(request.headers["webhook-timestamp"]))
        if self.failing:
            return web.Response(status=503)
        message_id = request.headers["webhook-id"]
        if message_id not in self.kept:  # deduplicated on webhook-id
            self.kept[message_id] = event
            self.order.append(message_id)
        if self.lose_answers > 0:
            self.lose_answers -= 1
            return web.Response(status=500)
        return web.Response(status=204)


@asynccontextmanager
async def receiver() -> AsyncIterator[Receiver]:
    found = Receiver()
    app = web.Application()
    app.router.add_post("/hooks", found.receive)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    found.url = f"http://127.0.0.1:{port}/hooks"
    try:
        yield found
    finally:
        await runner.cleanup()


def fast_retries(settings: Settings, window: float) -> Settings:
    return settings.model_copy(
        update={
            "webhook_retry_window_seconds": window,
            "webhook_first_retry_seconds": 0.2,
            "webhook_max_backoff_seconds": 0.8,
            "webhook_poll_seconds": 0.1,
        }
    )


@pytest.fixture
async def hooks() -> AsyncIterator[Receiver]:
    async with receiver() as found:
        yield found


async def subscribe(
    system: System, hooks: Receiver, types: list[str], pilot: str = "wigan"
) -> dict[str, Any]:
    response = await system.reports.post(
        f"/pilots/{pilot}/webhooks",
        json={"url": hooks.url, "event_types": types},
        headers=system.admin(),
    )
    assert response.status == 201, await response.text()
    created = dict(await response.json())
    assert created["secret"].startswith("whsec_")
    hooks.secret = created["secret"]
    return created


async def recorded(settings: Settings, types: list[str]) -> list[dict[str, Any]]:
    """Every stored event of these types, from the three stores."""
    found: list[dict[str, Any]] = []
    for service in ("allocation", "spending", "approval"):
        async with connect_service_db(settings, service) as conn:
            rows = await conn.fetch(
                "SELECT envelope FROM events WHERE type = ANY($1::text[])", types
            )
        found += [
            json.loads(row["envelope"]) if isinstance(row["envelope"], str) else row["envelope"]
            for row in rows
        ]
    return found


async def deliveries(system: System, subscription: str, **query: str) -> list[dict[str, Any]]:
    response = await system.reports.get(
        f"/pilots/wigan/webhooks/{subscription}/deliveries", params=query, headers=system.admin()
    )
    assert response.status == 200, await response.text()
    return list((await response.json())["deliveries"])


def in_stream_order(hooks: Receiver) -> bool:
    """Each stream's events were first kept in version order."""
    last: dict[str, int] = {}
    for message_id in hooks.order:
        event = hooks.kept[message_id]
        stream, version = event["streamid"], event["streamversion"]
        if last.get(stream, 0) >= version:
            return False
        last[stream] = version
    return True


async def test_every_event_arrives_signed_once_after_deduplication_despite_failures(
    settings: Settings, token: Callable[..., str], hooks: Receiver
) -> None:
    settings = fast_retries(settings, window=3600)
    async with running_system(settings, token, reporting=True) as system:
        await system.configure()
        created = await subscribe(system, hooks, TYPES)
        listed = await system.reports.get("/pilots/wigan/webhooks", headers=system.admin())
        assert [s["subscription_id"] for s in (await listed.json())["subscriptions"]] == [
            created["subscription_id"]
        ]
        assert "secret" not in (await listed.json())["subscriptions"][0]  # shown once only

        requests = []
        for family in ("fam-1", "fam-2", "fam-3"):
            version = await system.enrol(family, allocate=50_000)
            requests += [
                await system.request(family, amount, version=version) for amount in (1_000, 2_000)
            ]
        for request in requests:
            await system.settled(request["request_id"], "approved")
        await wait_for(lambda: hooks.sends >= 3, timeout=30)  # it is being refused, and retried
        hooks.failing, hooks.lose_answers = False, 4

        expected = {event["id"] for event in await recorded(settings, TYPES)}
        assert len(expected) == 3 * (1 + 1 + 2 + 2)  # enrolled, allocated, 2 requests, 2 approvals
        await wait_for(lambda: set(hooks.kept) >= expected, timeout=60)
        await asyncio.sleep(1)  # nothing more, nor twice, comes after
        assert set(hooks.kept) == expected
        assert hooks.refused_signatures == 0
        assert hooks.sends > len(expected)  # refusals and lost answers were sent again
        assert in_stream_order(hooks)
        assert {event["type"] for event in hooks.kept.values()} == set(TYPES)
        assert all(event["specversion"] == "1.0" for event in hooks.kept.values())

        subscription = created["subscription_id"]
        listed_deliveries = await deliveries(system, subscription)
        assert {d["event_id"] for d in listed_deliveries} == expected
        await wait_for(lambda: _all_delivered(system, subscription), timeout=10)

        # Removed: nothing more is recorded for it, its secret is erased, replay is refused.
        removed = await system.reports.delete(
            f"/pilots/wigan/webhooks/{subscription}", headers=system.admin()
        )
        assert removed.status == 200
        assert (await removed.json())["removed_at"] is not None
        await system.enrol("fam-4", allocate=10_000)
        await asyncio.sleep(2)
        assert "fam-4" not in {e.get("familyid") for e in hooks.kept.values()}
        async with connect_service_db(settings, "reporting") as conn:
            assert (
                await conn.fetchval(
                    "SELECT count(*) FROM personal_keys WHERE subject = $1 AND wrapped IS NOT NULL",
                    f"webhook:{subscription}",
                )
                == 0
            )
        replay = await system.reports.post(
            f"/pilots/wigan/webhooks/{subscription}/replay",
            json={"from_position": 1},
            headers=system.admin(),
        )
        assert replay.status == 409


async def _all_delivered(system: System, subscription: str) -> bool:
    listed = await deliveries(system, subscription)
    return all(d["status"] == "delivered" for d in listed)


async def test_a_delivery_still_failing_after_the_window_is_dead_listed_and_replayable(
    settings: Settings, token: Callable[..., str], hooks: Receiver
) -> None:
    settings = fast_retries(settings, window=1.0)
    async with running_system(settings, token, reporting=True) as system:
        # Before any delivery, each outcome is at 0 (so the first dead one is an increase),
        # in reporting alone; and reporting, which publishes nothing, shows no relay.
        exported = await (await system.reports.get("/metrics")).text()
        for outcome in ("delivered", "retried", "dead"):
            assert f'ledger_webhook_deliveries_total{{outcome="{outcome}"}} 0.0' in exported
        assert "ledger_relay_lag_seconds" not in exported
        allocation = await (await system.allocation.get("/metrics")).text()
        assert "ledger_webhook_deliveries_total{" not in allocation
        assert "ledger_relay_lag_seconds " in allocation
        await system.configure()
        created = await subscribe(system, hooks, ["family.enrolled", "family.budget_allocated"])
        subscription = created["subscription_id"]
        for family in ("fam-1", "fam-2"):
            await system.enrol(family, allocate=20_000)

        async def all_dead() -> bool:
            listed = await deliveries(system, subscription, status="dead")
            return len(listed) == 4

        await wait_for(all_dead, timeout=30)  # the family's later events went on after its first
        dead = await deliveries(system, subscription, status="dead")
        assert all(d["attempts"] >= 2 and d["last_error"] == "answered 503" for d in dead)
        assert all(d["next_attempt_at"] is None for d in dead)
        metrics = await (await system.reports.get("/metrics")).text()
        assert 'ledger_webhook_deliveries_total{outcome="dead"} 4.0' in metrics
        assert hooks.kept == {}

        hooks.failing = False
        first = min(d["position"] for d in dead)
        replay = await system.reports.post(
            f"/pilots/wigan/webhooks/{subscription}/replay",
            json={"from_position": first},
            headers=system.admin(),
        )
        assert replay.status == 200, await replay.text()
        assert (await replay.json())["replayed"] == 4
        await wait_for(lambda: len(hooks.kept) == 4, timeout=30)
        assert {e["id"] for e in hooks.kept.values()} == {d["event_id"] for d in dead}
        assert in_stream_order(hooks)

        # Replaying delivered ones sends them again; the receiver deduplicates them.
        sends = hooks.sends
        again = await system.reports.post(
            f"/pilots/wigan/webhooks/{subscription}/replay",
            json={"from_position": first},
            headers=system.admin(),
        )
        assert (await again.json())["replayed"] == 4
        await wait_for(lambda: hooks.sends >= sends + 4, timeout=30)
        assert len(hooks.kept) == 4


async def test_subscriptions_refuse_what_no_one_could_deliver(
    settings: Settings, token: Callable[..., str], hooks: Receiver
) -> None:
    async with running_system(settings, token, reporting=True) as system:
        await system.configure()
        for body in (
            {"url": "ftp://example.org/x", "event_types": ["family.enrolled"]},
            {"url": hooks.url, "event_types": ["family.vanished"]},
            {"url": hooks.url, "event_types": []},
        ):
            response = await system.reports.post(
                "/pilots/wigan/webhooks", json=body, headers=system.admin()
            )
            assert response.status == 422, body
            assert response.content_type == "application/problem+json"
        worker = await system.reports.post(
            "/pilots/wigan/webhooks",
            json={"url": hooks.url, "event_types": ["family.enrolled"]},
            headers=system.worker(),
        )
        assert worker.status == 403
        unknown = await system.reports.get(
            "/pilots/wigan/webhooks/not-a-uuid/deliveries", headers=system.admin()
        )
        assert unknown.status == 404
        async with connect_service_db(settings, "reporting") as conn:
            assert await conn.fetchval("SELECT count(*) FROM webhook_subscriptions") == 0


async def test_a_webhook_may_not_reach_the_ledgers_own_network(
    settings: Settings, token: Callable[..., str], hooks: Receiver
) -> None:
    """Without an operator's allowance, loopback, private, link-local and metadata addresses
    are refused when subscribing (they were accepted, and their errors told what answered
    there); with it, a receiver there is reached, and a delivery that fails says only that
    it could not connect, never what the connection met."""
    closed = settings.model_copy(update={"webhook_allowed_networks": ""})
    async with running_system(closed, token, reporting=True) as system:
        await system.configure()
        for url in (
            hooks.url,
            hooks.url.replace("127.0.0.1", "localhost"),
            "http://169.254.169.254/latest/meta-data/",
            "http://10.1.2.3:5432/",
            "http://[::1]:8080/",
            "http://[::ffff:127.0.0.1]:6379/",
        ):
            response = await system.reports.post(
                "/pilots/wigan/webhooks",
                json={"url": url, "event_types": ["family.enrolled"]},
                headers=system.admin(),
            )
            assert response.status == 422, url
            assert (await response.json())["code"] == "webhook_url_not_allowed"
        async with connect_service_db(closed, "reporting") as conn:
            assert await conn.fetchval("SELECT count(*) FROM webhook_subscriptions") == 0
    async with running_system(fast_retries(settings, 3600), token, reporting=True) as system:
        await system.configure()
        nobody = f"http://127.0.0.1:{free_port()}/hooks"  # allowed, and nothing listens
        created = await system.reports.post(
            "/pilots/wigan/webhooks",
            json={"url": nobody, "event_types": ["family.enrolled"]},
            headers=system.admin(),
        )
        assert created.status == 201
        subscription = (await created.json())["subscription_id"]
        await system.enrol("fam-1")

        async def failed() -> list[dict[str, Any]]:
            return [d for d in await deliveries(system, subscription) if d["attempts"]]

        [delivery] = await wait_for(failed, timeout=20)
        assert delivery["last_error"] == "could not connect"


async def test_subscribing_again_with_the_same_key_makes_one_subscription(
    settings: Settings, token: Callable[..., str], hooks: Receiver
) -> None:
    """POST /webhooks honours Idempotency-Key, as the README promises of every POST: a retry
    answers the first subscription, secret and all, and makes no second one."""
    async with running_system(settings, token, reporting=True) as system:
        await system.configure()
        body = {"url": hooks.url, "event_types": ["family.enrolled"]}
        headers = {**system.admin(), "Idempotency-Key": "subscribe-1"}
        first = await system.reports.post("/pilots/wigan/webhooks", json=body, headers=headers)
        again = await system.reports.post("/pilots/wigan/webhooks", json=body, headers=headers)
        assert (first.status, again.status) == (201, 201)
        assert await first.json() == await again.json()
        assert again.headers["Idempotent-Replayed"] == "true"
        other = {**body, "event_types": ["family.exited"]}
        reused = await system.reports.post("/pilots/wigan/webhooks", json=other, headers=headers)
        assert reused.status == 409
        listed = await system.reports.get("/pilots/wigan/webhooks", headers=system.admin())
        assert len((await listed.json())["subscriptions"]) == 1


async def test_one_pilots_slow_receivers_never_hold_up_another_pilots_deliveries(
    settings: Settings, token: Callable[..., str], hooks: Receiver
) -> None:
    """Forty subscriptions of one pilot whose receiver never answers in time, then an event
    of another pilot: its delivery arrives while the slow ones are still being waited for.
    The dispatcher used to send rounds of 32 and wait for the slowest of each."""
    settings = settings.model_copy(
        update={"webhook_timeout_seconds": 8.0, "webhook_poll_seconds": 0.1}
    )
    async with slow_receiver() as slow, running_system(settings, token, reporting=True) as system:
        await system.configure()
        for _ in range(40):
            await system.reports.post(
                "/pilots/wigan/webhooks",
                json={"url": slow, "event_types": ["family.enrolled"]},
                headers=system.admin(),
            )
        await system.enrol("fam-1")
        other = replace(system, pilot="leeds")
        await other.configure()
        await subscribe(other, hooks, ["family.enrolled"], pilot="leeds")
        hooks.failing = False
        async with connect_service_db(settings, "reporting") as conn:

            async def slow_ones_claimed() -> bool:
                return bool(await conn.fetchval(_SENDING, "wigan") > 0)

            await wait_for(slow_ones_claimed, timeout=20)
            await other.enrol("fam-9")
            await wait_for(lambda: len(hooks.kept) == 1, timeout=20)
            tried = await conn.fetchval(_TRIED, "wigan")
        assert tried == 0  # none of the slow ones had even timed out yet


_SENDING = """
SELECT count(*) FROM webhook_deliveries d JOIN webhook_subscriptions s USING (subscription_id)
WHERE s.pilot_id = $1 AND d.lease_until IS NOT NULL
"""
_TRIED = """
SELECT count(*) FROM webhook_deliveries d JOIN webhook_subscriptions s USING (subscription_id)
WHERE s.pilot_id = $1 AND d.attempts > 0
"""


@asynccontextmanager
async def slow_receiver() -> AsyncIterator[str]:
    """A receiver that answers only after the ledger's send has timed out."""

    async def late(_: web.Request) -> web.Response:
        await asyncio.sleep(12)
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/slow", late)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}/slow"
    finally:
        await runner.cleanup()
