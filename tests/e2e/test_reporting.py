"""Reporting through HTTP: balances now and as of a moment, and a family's history."""

from __future__ import annotations

import csv
import io
import itertools
import json
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from urllib.parse import quote

import pytest

from shared.core.events import Envelope
from shared.core.settings import Settings
from tests.e2e.system import System, auth, running_system
from tests.support import run_ledger, wait_for


@pytest.fixture
async def system(settings: Settings, token: Callable[..., str]) -> AsyncIterator[System]:
    async with running_system(settings, token, reporting=True) as system:
        await system.configure()
        yield system


async def balance(
    system: System, family: str, as_of: datetime | None = None, *, projected: bool = True
) -> dict[str, Any]:
    """The family's balance in reporting; with ``projected=False`` an empty one while
    reporting has not yet seen the family (404), for waiting on it."""
    query = "" if as_of is None else f"?as_of={quote(as_of.isoformat())}"
    response = await system.reports.get(
        f"/pilots/wigan/families/{family}/balance{query}", headers=system.admin()
    )
    if response.status == 404 and not projected:
        return {}
    assert response.status == 200, await response.text()
    return dict(await response.json())


async def test_balance_now_and_as_of_before_and_after_a_purchase(system: System) -> None:
    """The balance follows the facts; as_of answers from what was recorded by then."""
    version = await system.enrol("fam-1", allocate=100_000)
    request_id = (await system.request("fam-1", 30_000, version=version))["request_id"]
    await system.settled(request_id, "approved")

    async def shows(allocated: int, committed: int, spent: int) -> bool:
        now = await balance(system, "fam-1", projected=False)  # reporting may lag behind
        return (now.get("allocated_pence"), now.get("committed_pence"), now.get("spent_pence")) == (
            allocated,
            committed,
            spent,
        )

    await wait_for(lambda: shows(100_000, 30_000, 0))
    before_purchase = datetime.now(UTC)
    purchase = await system.spending.post(
        f"/pilots/wigan/spend-requests/{request_id}/purchases",
        json={"amount_pence": 12_500, "purchased_on": "2026-03-01", "method": "card"},
        headers=system.worker(),
    )
    assert purchase.status == 201
    await wait_for(lambda: shows(100_000, 17_500, 12_500))
    then = await balance(system, "fam-1", before_purchase)
    assert (then["committed_pence"], then["spent_pence"], then["available_pence"]) == (
        30_000,
        0,
        70_000,
    )
    now = await balance(system, "fam-1", datetime.now(UTC))
    assert (now["committed_pence"], now["spent_pence"], now["available_pence"]) == (
        17_500,
        12_500,
        70_000,
    )
    before_anything = await balance(system, "fam-1", datetime(2000, 1, 1, tzinfo=UTC))
    assert before_anything["allocated_pence"] == 0


async def test_as_of_picks_the_period_by_its_utc_date(system: System) -> None:
    """23:30 on a period's last day at UTC-2 is 01:30 UTC on the next period's first day: the
    answer is the next period's, whatever offset the caller wrote the moment in."""
    await system.enrol("fam-z")
    await wait_for(lambda: _known(system, "fam-z"))
    west = timezone(timedelta(hours=-2))
    answer = await balance(system, "fam-z", datetime(2027, 1, 4, 23, 30, tzinfo=west))
    assert (answer["period_start"], answer["period_end"]) == ("2027-01-05", "2028-01-04")


async def _known(system: System, family: str) -> bool:
    response = await system.reports.get(
        f"/pilots/wigan/families/{family}/balance", headers=system.admin()
    )
    return response.status == 200


async def test_history_holds_every_service_in_order_with_its_chains(system: System) -> None:
    """Every event of the family from all three services, in order, each chain verifiable."""
    version = await system.enrol("fam-2", allocate=50_000)
    request_id = (await system.request("fam-2", 5_000, version=version))["request_id"]
    await system.settled(request_id, "approved")
    path = "/pilots/wigan/families/fam-2/history"
    expected = [
        "family.enrolled",
        "family.budget_allocated",
        "spend_request.requested",
        "decision.approved",
    ]

    async def complete() -> list[dict[str, Any]] | None:
        response = await system.reports.get(path, headers=auth(system.token("auditor", "wigan")))
        if response.status == 404:  # reporting has not read the enrolment yet
            return None
        assert response.status == 200, await response.text()
        events = list((await response.json())["events"])
        return events if [e["type"] for e in events] == expected else None

    events = await wait_for(complete)
    envelopes = [Envelope.model_validate(event) for event in events]
    assert {e.source for e in envelopes} == {
        "ledger/allocation",
        "ledger/spending",
        "ledger/approval",
    }
    assert all(e.hash == e.computed_hash() for e in envelopes)
    by_stream = itertools.groupby(
        sorted(envelopes, key=lambda e: (e.stream_id, e.stream_version)), key=lambda e: e.stream_id
    )
    for _, stream in by_stream:
        chain = list(stream)
        assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(chain))
    refused = await system.reports.get(path, headers=system.worker())
    assert refused.status == 403
    other_team = await system.reports.get(
        "/pilots/wigan/families/fam-2/balance", headers=system.worker("sw-9", "t-9")
    )
    assert other_team.status == 404  # another team's family answers as a missing one
    bad = await system.reports.get(
        "/pilots/wigan/families/fam-2/balance?as_of=yesterday", headers=system.admin()
    )
    assert (bad.status, (await bad.json())["code"]) == (422, "validation_failed")


async def test_transactions_csv_has_a_row_per_purchase_and_refund(system: System) -> None:
    """Rows match what was posted; no purpose; vendors from a closed list, receipt numbers as
    references (a name, a sentence or a formula is refused); roles enforced."""
    version = await system.enrol("fam-3", allocate=100_000)
    request_id = (await system.request("fam-3", 40_000, version=version))["request_id"]
    await system.settled(request_id, "approved")
    path = f"/pilots/wigan/spend-requests/{request_id}/purchases"
    posted = []
    for amount, vendor in ((25_000, "furniture"), (4_999, "supermarket")):
        response = await system.spending.post(
            path,
            json={
                "amount_pence": amount,
                "purchased_on": "2026-03-04",
                "method": "card",
                "vendor": vendor,
                "receipt_ref": f"INV-2026/{amount}",
            },
            headers=system.worker(),
        )
        posted.append((await response.json())["purchase_id"])
    for free_text in (
        {"vendor": "Argos"},
        {"vendor": '=HYPERLINK("x")'},
        {"receipt_ref": "bed for Jamie Smith, 4 Elm Road"},
        {"receipt_ref": '=HYPERLINK("x")'},
    ):
        body = {"amount_pence": 1, "purchased_on": "2026-03-04", "method": "card", **free_text}
        response = await system.spending.post(path, json=body, headers=system.worker())
        assert response.status == 422, free_text
    refund = await system.spending.post(
        f"/pilots/wigan/purchases/{posted[0]}/refunds",
        json={"amount_pence": 1_050, "reason": "returned"},
        headers=system.finance(),
    )
    assert refund.status == 201

    async def rows() -> list[dict[str, str]] | None:
        response = await system.reports.get(
            "/pilots/wigan/transactions.csv", headers=system.finance()
        )
        assert response.status == 200
        assert response.content_type == "text/csv"
        text = await response.text()
        found = list(csv.DictReader(io.StringIO(text)))
        return found if len(found) == 3 else None

    found = await wait_for(rows)
    assert [(r["kind"], r["purchase_id"], r["amount_pence"], r["amount_gbp"]) for r in found] == [
        ("purchase", posted[0], "25000", "250.00"),
        ("purchase", posted[1], "4999", "49.99"),
        ("refund", posted[0], "-1050", "-10.50"),
    ]
    assert found[2]["vendor"] == "furniture"
    assert found[2]["method"] == "card"
    assert (found[0]["receipt_ref"], found[1]["receipt_ref"]) == ("INV-2026/25000", "INV-2026/4999")
    assert all(r["family_id"] == "fam-3" and r["request_id"] == request_id for r in found)
    assert all(r["category"] == "practical" for r in found)
    text = await (
        await system.reports.get("/pilots/wigan/transactions.csv", headers=system.admin())
    ).text()
    assert "school uniform" not in text  # the purpose every request in these tests carries
    refused = await system.reports.get("/pilots/wigan/transactions.csv", headers=system.worker())
    assert refused.status == 403


async def test_uptake_matches_what_was_posted(system: System) -> None:
    """HTTP figures equal the sums of what this test did; suppression hides small counts."""
    versions = {f: await system.enrol(f, allocate=10_000) for f in ("u1", "u2", "u3")}
    bought = []
    for family, amount in (("u1", 1_500), ("u1", 2_500), ("u2", 9_999)):
        request_id = (await system.request(family, amount, version=versions[family]))["request_id"]
        await system.settled(request_id, "approved")
        if family == "u1":
            response = await system.spending.post(
                f"/pilots/wigan/spend-requests/{request_id}/purchases",
                json={"amount_pence": amount, "purchased_on": "2026-03-05", "method": "cash"},
                headers=system.worker(),
            )
            assert response.status == 201
            bought.append(amount)
    told = await system.allocation.post(
        "/pilots/wigan/families/u3/disclosures",
        json={"disclosed_on": "2026-02-01", "method": "letter"},
        headers=system.worker(),
    )
    assert told.status == 201
    manager = system.manager()

    async def figures() -> dict[str, Any] | None:
        response = await system.reports.get("/pilots/wigan/uptake", headers=manager)
        body = dict(await response.json())
        done = (
            body["all"]["spent_pence"] == sum(bought) and body["all"]["share_families_told_budget"]
        )
        return body if done else None

    body = await wait_for(figures)
    pilot = body["all"]
    assert body["arms"] == {}
    assert (
        pilot["families_enrolled"],
        pilot["families_with_request"],
        pilot["families_with_spend"],
    ) == (3, 2, 1)
    assert (pilot["requests"], pilot["approved"], pilot["rejected"]) == (3, 3, 0)
    assert pilot["allocated_pence"] == 30_000
    assert pilot["spend_vs_forecast"] == round(sum(bought) / (3 * 400_000), 4)
    assert pilot["median_transaction_pence"] == 1_500
    assert pilot["share_transactions_under_2000_pence"] == 0.5
    assert pilot["spent_by_category_pence"] == {"practical": sum(bought)}
    assert pilot["share_families_told_budget"] == round(1 / 3, 4)
    assert pilot["median_hours_to_decision"] is not None
    # The manager's own team is the whole pilot: they see it as it is; an auditor does not.
    auditor = auth(system.token("auditor", "wigan", sub="aud-1"))
    published = await (
        await system.reports.get("/pilots/wigan/uptake?suppress_small_cells=true", headers=auditor)
    ).json()
    assert published["all"]["families_enrolled"] == "<5"
    assert published["all"]["uptake_rate"] is None
    refused = await system.reports.get("/pilots/wigan/uptake", headers=system.worker())
    assert refused.status == 403


async def test_figures_keep_to_one_clock_and_answer_in_business_time_too(
    system: System, settings: Settings
) -> None:
    """A history synced with backdated occurred_at, as a migration sends it: time to decision
    is record time at both ends (it mixed a request's business time with a decision's record
    time: a decision taken in milliseconds took weeks); a balance and a replay as of a
    moment answer in business time when asked (they knew record time only, and showed
    nothing for a family funded, by its own account, long before); a purchase dated years
    back, or ahead, is refused as occurred_at would be."""
    now = datetime.now(UTC)
    funded_at = (now - timedelta(days=20)).isoformat()
    version = await system.enrol("fam-1")
    allocated = await system.allocation.post(
        "/pilots/wigan/families/fam-1/allocations",
        json={"amount_pence": 100_000, "occurred_at": funded_at},
        headers=system.admin(),
    )
    assert allocated.status == 201, await allocated.text()
    version = (await allocated.json())["stream_version"]
    asked = await system.request(
        "fam-1", 2_000, version=version, occurred_at=(now - timedelta(days=19)).isoformat()
    )
    await system.settled(asked["request_id"], "approved")
    a_week_ago = now - timedelta(days=7)

    async def uptake() -> dict[str, Any] | None:
        response = await system.reports.get("/pilots/wigan/uptake", headers=system.admin())
        if response.status != 200:  # reporting has not read the pilot yet
            return None
        figures = (await response.json())["all"]
        return figures if figures["approved"] == 1 else None

    figures = await wait_for(uptake, timeout=20)
    assert 0 <= figures["median_hours_to_decision"] < 1
    path = f"/pilots/wigan/families/fam-1/balance?as_of={quote(a_week_ago.isoformat())}"
    in_record = await system.reports.get(path, headers=system.admin())
    in_business = await system.reports.get(f"{path}&clock=business", headers=system.admin())
    assert (await in_record.json())["allocated_pence"] == 0  # recorded today
    shown = await in_business.json()
    # Funded 20 days ago by its own account; the hold was decided today, in any clock.
    assert (shown["allocated_pence"], shown["committed_pence"], shown["clock"]) == (
        100_000,
        0,
        "business",
    )
    code, output = await run_ledger(
        settings, "audit", "replay", "--pilot", "wigan", "--family", "fam-1",
        "--as-of", a_week_ago.isoformat(), "--clock", "business",
    )  # fmt: skip
    assert code == 0
    types = [json.loads(line)["type"] for line in output.splitlines()]
    assert "family.budget_allocated" in types
    assert "decision.approved" not in types  # decided today, in business time too
    request_path = f"/pilots/wigan/spend-requests/{asked['request_id']}/purchases"
    for day, code_ in (
        ("2020-06-01", "purchased_on_too_old"),
        ("2099-01-01", "purchased_on_in_future"),
    ):
        refused = await system.spending.post(
            request_path,
            json={"amount_pence": 500, "purchased_on": day, "method": "card"},
            headers=system.finance(),
        )
        assert refused.status == 422
        assert (await refused.json())["code"] == code_
