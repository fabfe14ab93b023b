"""Operating the services: JSON logs that follow a request across services and hold no
personal data, and the metrics ops teams scrape.

A spend request sent with an ``X-Correlation-Id`` is followed through the logs of the
services its events reach. Free text (a purpose, a manager's note, a rejection reason, a
refund reason) and text sent in a refused request never appear in any log line. The same
work shows on ``/metrics``: requests per route, latency, events appended per type, relay
lag, consumer lag per partition and idempotent replays.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from shared.core.settings import Settings
from tests.e2e.processes import ServiceProcesses, sample, service_processes
from tests.e2e.system import auth
from tests.support import SERVICE_NAMES, reporting_caught_up, wait_for

PURPOSE = "Purpose-Zebedee-Unique-7741"
LARGE_PURPOSE = "Purpose-Orlando-Unique-9918"
NOTE = "Note-Perpetua-Unique-3310"
REASON = "Reason-Barnaby-Unique-5512"
REFUND_REASON = "Refund-Cordelia-Unique-6629"
REFUSED_PURPOSE = "Purpose-Refused-Unique-1107"
PRIVATE = (PURPOSE, LARGE_PURPOSE, NOTE, REASON, REFUND_REASON, REFUSED_PURPOSE)


async def call(
    http: aiohttp.ClientSession,
    method: str,
    url: str,
    body: dict[str, Any],
    headers: dict[str, str],
    expect: int,
) -> dict[str, Any]:
    async with http.request(method, url, json=body, headers=headers) as response:
        assert response.status == expect, await response.text()
        return dict(await response.json())


async def pilot_with_a_family(
    services: ServiceProcesses, http: aiohttp.ClientSession, admin: dict[str, str]
) -> int:
    """The family's stream_version after its allocation, for its requests to name: approval
    decides one only once it has seen that allocation (without it, a request can overtake
    the allocation into approval and be refused for want of funds, as one run's was)."""
    url = services.url("allocation")
    config = {
        "name": "Wigan",
        "period_months": 12,
        "family_cap_pence": 400_000,
        "approval_tiers": [{"up_to_pence": 10_000, "approver": "auto"}],
        "categories": ["practical"],
    }
    await call(http, "PUT", f"{url}/pilots/wigan", config, admin, 201)
    family = {"family_id": "fam-1", "team": "t-1", "worker": "sw-1", "enrolled_on": "2026-01-05"}
    await call(http, "POST", f"{url}/pilots/wigan/families", family, admin, 201)
    allocation = {"amount_pence": 400_000}
    allocated = await call(
        http, "POST", f"{url}/pilots/wigan/families/fam-1/allocations", allocation, admin, 201
    )
    return int(allocated["stream_version"])


def spend_request(amount: int, purpose: str, version: int) -> dict[str, Any]:
    return {
        "allocation_version": version,
        "family_id": "fam-1",
        "amount_pence": amount,
        "category": "practical",
        "purpose": purpose,
        "requested_by": "sw-1",
        "family_involved": True,
    }


async def test_a_request_is_followed_in_logs_and_metrics_and_no_log_holds_free_text(
    settings: Settings, token: Callable[..., str], tmp_path: Path
) -> None:
    correlation = f"case-system-{uuid.uuid4()}"
    async with (
        service_processes(settings, tmp_path) as services,
        aiohttp.ClientSession() as http,
    ):
        admin = auth(token("admin", "wigan"))
        worker = auth(token("social_worker", "wigan", sub="sw-1", team="t-1"))
        manager = auth(token("manager", "wigan", sub="m-1", team="t-1"))
        finance = auth(token("finance", "wigan", sub="fin-1"))
        version = await pilot_with_a_family(services, http, admin)
        spending = f"{services.url('spending')}/pilots/wigan"

        first_try = {**worker, "X-Correlation-Id": correlation, "Idempotency-Key": "k-1"}
        small = await call(
            http,
            "POST",
            f"{spending}/spend-requests",
            spend_request(2_500, PURPOSE, version),
            first_try,
            202,
        )
        retried = await call(
            http,
            "POST",
            f"{spending}/spend-requests",
            spend_request(2_500, PURPOSE, version),
            first_try,
            202,
        )
        assert retried == small
        large = await call(
            http,
            "POST",
            f"{spending}/spend-requests",
            spend_request(50_000, LARGE_PURPOSE, version),
            worker,
            202,
        )
        noted = await call(
            http,
            "POST",
            f"{spending}/spend-requests",
            spend_request(20_000, LARGE_PURPOSE, version),
            worker,
            202,
        )
        refused = spend_request(-5, REFUSED_PURPOSE, version)
        await call(http, "POST", f"{spending}/spend-requests", refused, worker, 422)

        async def status(request_id: str, wanted: str) -> bool:
            async with http.get(f"{spending}/spend-requests/{request_id}", headers=admin) as got:
                return bool((await got.json())["status"] == wanted)

        await wait_for(lambda: status(small["request_id"], "approved"), timeout=20)
        await wait_for(lambda: status(large["request_id"], "awaiting_approval"), timeout=20)
        await wait_for(lambda: status(noted["request_id"], "awaiting_approval"), timeout=20)
        approval = f"{services.url('approval')}/pilots/wigan/spend-requests"
        await call(
            http, "POST", f"{approval}/{noted['request_id']}/approve", {"note": NOTE}, manager, 200
        )
        await call(
            http,
            "POST",
            f"{approval}/{large['request_id']}/reject",
            {"reason": REASON},
            manager,
            200,
        )
        purchase = await call(
            http,
            "POST",
            f"{spending}/spend-requests/{small['request_id']}/purchases",
            {
                "amount_pence": 2_000,
                "purchased_on": datetime.now(UTC).date().isoformat(),
                "method": "card",
            },
            finance,
            201,
        )
        await call(
            http,
            "POST",
            f"{spending}/purchases/{purchase['purchase_id']}/refunds",
            {"amount_pence": 500, "reason": REFUND_REASON},
            finance,
            201,
        )
        await wait_for(lambda: reporting_caught_up(settings), timeout=30)

        metrics = {name: await services.metrics(name) for name in SERVICE_NAMES}
        logs = {name: services.log_lines(name) for name in SERVICE_NAMES}
        texts = {name: services.log_path(name).read_text() for name in SERVICE_NAMES}

    for name, lines in logs.items():
        assert lines, name
        assert all(line["service"] == name for line in lines), name
        assert all({"event", "level", "timestamp"} <= set(line) for line in lines), name
    handled = [line for line in logs["spending"] if line["event"] == "request_handled"]
    assert all(line["request_id"] for line in handled)
    followed = {
        name: [line for line in lines if line.get("correlation_id") == correlation]
        for name, lines in logs.items()
    }
    assert any(line["event"] == "request_handled" for line in followed["spending"])
    for name in ("approval", "reporting", "allocation"):
        applied = [line for line in followed[name] if line["event"] == "event_applied"]
        assert any(line["type"] == "spend_request.requested" for line in applied), name
        assert all(line["event_id"] and line["pilot_id"] == "wigan" for line in applied), name
    decided = [line for line in followed["reporting"] if line.get("type") == "decision.approved"]
    assert decided  # the decision carries the request's correlation id on to reporting
    for name, text in texts.items():
        for secret in PRIVATE:
            assert secret not in text, (name, secret)

    spent = metrics["spending"]
    route = 'route="/pilots/{pilot_id}/spend-requests"'
    assert sample(spent, "ledger_http_requests_total", route, 'status="202"') == 4
    assert sample(spent, "ledger_http_requests_total", route, 'status="422"') == 1
    assert sample(spent, "ledger_http_request_duration_seconds_count", route) == 5
    assert sample(spent, "ledger_events_appended_total", 'type="spend_request.requested"') == 3
    assert sample(spent, "ledger_idempotent_replays_total") == 1
    assert sample(spent, "ledger_relay_lag_seconds") is not None
    decisions = metrics["approval"]
    assert sample(decisions, "ledger_events_appended_total", 'type="decision.approved"') == 2
    assert sample(decisions, "ledger_events_appended_total", 'type="decision.rejected"') == 1
    spending_topic = 'topic="' + settings.topic("ledger.spending")
    assert sample(decisions, "ledger_consumer_lag", spending_topic) == 0  # caught up
    assert sample(metrics["reporting"], "ledger_consumer_lag", 'partition="0"') is not None
