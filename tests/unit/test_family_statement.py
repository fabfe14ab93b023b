"""The family's statement from hand-made facts: purposes only when given, and escaped; and
spending's purposes endpoint as reporting asks it, on a real loopback server."""

from __future__ import annotations

from datetime import UTC, date, datetime
from uuid import NAMESPACE_URL, UUID, uuid5

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from services.reporting.purposes import PurposesUnavailableError, SpendingPurposes
from services.reporting.statement import render, statement
from shared.contracts.balances import Balance
from tests.unit.test_uptake import event

BALANCE = Balance(
    period_start=date(2026, 1, 1),
    period_end=date(2026, 12, 31),
    allocated_pence=50_000,
    committed_pence=0,
    spent_pence=9_000,
)
PRINTED = datetime(2026, 3, 6, tzinfo=UTC)


def _request(name: str) -> UUID:
    return uuid5(NAMESPACE_URL, name)  # as tests.unit.test_uptake turns short ids into UUIDs


FACTS = [
    event("family.budget_allocated", "f", amount_pence=50_000),
    event("purchase.recorded", "f", amount_pence=10_000, request_id="r1", purchase_id="b1"),
    event("purchase.refunded", "f", amount_pence=1_000, request_id="r1", purchase_id="b1"),
    event("purchase.recorded", "f", amount_pence=0, request_id="r2", purchase_id="b2"),
]


def test_without_purposes_the_page_has_none_and_says_so() -> None:
    """Given purchases, when the statement is made without purposes, no line says what it
    was for and the page says no notes are shown."""
    shown = statement(FACTS, BALANCE)
    assert [line.purpose for line in shown.spent] == [None, None, None]
    page = render("Wigan", "f", shown, PRINTED)
    assert "For:" not in page
    assert "never notes written about your family" in page


def test_with_purposes_each_purchase_and_refund_says_what_it_was_for_escaped() -> None:
    """Given spending's purposes for one of two requests (one markup-like), when the statement
    is made with them, its purchase and refund carry it, escaped, and the other none."""
    purposes = {_request("r1"): "a <b>bed</b> & bedding", uuid5(NAMESPACE_URL, "other"): "x"}
    shown = statement(FACTS, BALANCE, purposes)
    by_amount = {line.pence: line.purpose for line in shown.spent}
    assert by_amount == {
        10_000: "a <b>bed</b> & bedding",
        -1_000: "a <b>bed</b> & bedding",
        0: None,
    }
    page = render("Wigan", "f", shown, PRINTED)
    assert page.count("For: a &lt;b&gt;bed&lt;/b&gt; &amp; bedding") == 2
    assert "<b>bed" not in page
    assert "Your worker chose to show what each thing was for" in page


def test_an_empty_answer_still_marks_the_page_as_showing_purposes() -> None:
    """Given a worker asked for purposes and spending had none, the page says it shows them
    (there were none to show), not that it never does."""
    page = render("Wigan", "f", statement(FACTS, BALANCE, {}), PRINTED)
    assert "For:" not in page
    assert "Your worker chose to show" in page


async def _spending(answer: web.Response, seen: list[str] | None = None) -> TestServer:
    """A stand-in for spending's endpoint on loopback; the Authorization of each ask kept."""
    seen = [] if seen is None else seen

    async def purposes(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization", ""))
        return answer

    app = web.Application()
    app.router.add_get("/pilots/{pilot_id}/families/{family_id}/purposes", purposes)
    server = TestServer(app)
    await server.start_server()
    return server


async def test_reporting_asks_spending_in_the_callers_name() -> None:
    """Given spending answers purposes, when reporting asks with a caller's Authorization,
    that header is what spending sees and the purposes come back by request."""
    request_id = _request("r1")
    body = {"family_id": "f", "purposes": [{"request_id": str(request_id), "purpose": "a bed"}]}
    seen: list[str] = []
    server = await _spending(web.json_response(body), seen)
    try:
        client = SpendingPurposes(str(server.make_url("/")), timeout_seconds=5)
        assert await client.of_family("p", "f/x", "Bearer abc") == {request_id: "a bed"}
        assert seen == ["Bearer abc"]
    finally:
        await server.close()


async def test_a_family_spending_has_not_seen_has_no_purposes() -> None:
    server = await _spending(web.json_response({"title": "not found"}, status=404))
    try:
        client = SpendingPurposes(str(server.make_url("/")), timeout_seconds=5)
        assert await client.of_family("p", "f", "Bearer abc") == {}
    finally:
        await server.close()


@pytest.mark.parametrize("status", [500, 503, 401])
async def test_any_other_answer_is_a_503_to_retry(status: int) -> None:
    server = await _spending(web.json_response({}, status=status))
    try:
        client = SpendingPurposes(str(server.make_url("/")), timeout_seconds=5)
        with pytest.raises(PurposesUnavailableError, match=f"spending answered {status}"):
            await client.of_family("p", "f", "Bearer abc")
    finally:
        await server.close()


async def test_spending_out_of_reach_is_a_503_to_retry() -> None:
    """Given nothing listens where spending should be, the answer is 503 with Retry-After."""
    server = await _spending(web.json_response({}))
    url = str(server.make_url("/"))
    await server.close()  # the port is free again: connections are refused
    with pytest.raises(PurposesUnavailableError, match="cannot be reached") as raised:
        await SpendingPurposes(url, timeout_seconds=5).of_family("p", "f", "Bearer abc")
    assert (raised.value.status, raised.value.retry_after) == (503, 2)
