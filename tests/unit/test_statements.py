"""Statement reconciliation's pure parts: reading CSV and OFX, and matching lines."""

from __future__ import annotations

import re
from datetime import date, timedelta
from uuid import NAMESPACE_URL, UUID, uuid5

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.spending.statements import Line, Purchase, match, parse
from shared.core.errors import UnprocessableError


def purchase(
    name: str, pence: int, day: str, vendor: str | None = None, receipt: str | None = None
) -> Purchase:
    return Purchase(
        uuid5(NAMESPACE_URL, name),
        uuid5(NAMESPACE_URL, f"r-{name}"),
        "fam-1",
        pence,
        date.fromisoformat(day),
        vendor,
        receipt,
    )


def line(number: int, pence: int, day: str, description: str = "") -> Line:
    return Line(number, date.fromisoformat(day), pence, description, f"ref-{number}")


def test_csv_lines_in_pounds_become_pence_and_a_missing_reference_its_number() -> None:
    raw = (
        b"Date,Amount,Description,Reference\n"
        b"2026-03-05,12.50,TESCO STORES 2041,TX-1\n"
        b"2026-03-06,-3.99,REFUND ARGOS,\n"
    )
    assert parse(raw, "csv") == [
        Line(1, date(2026, 3, 5), 1_250, "TESCO STORES 2041", "TX-1"),
        Line(2, date(2026, 3, 6), -399, "REFUND ARGOS", "line 2"),
    ]


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"when,what\n2026-03-05,1\n",
        b"date,amount,description\n05/03/2026,1.00,x\n",
        b"date,amount,description\n2026-03-05,1.005,x\n",
        b"date,amount,description\n2026-03-05,lots,x\n",
        b"date,amount,description\n2026-03-05,NaN,x\n",
        b"date,amount,description\n2026-03-05,1e40,x\n",
        b"date,amount,description\n\x00,\x00,\x00\n",
        b"\xff\xfe not utf-8",
    ],
)
def test_a_csv_that_is_not_a_statement_is_refused(raw: bytes) -> None:
    with pytest.raises(UnprocessableError) as refused:
        parse(raw, "csv")
    assert refused.value.code == "unreadable_statement"


def test_ofx_debits_are_paid_out_and_credits_negative() -> None:
    raw = b"""OFXHEADER:100
DATA:OFXSGML
VERSION:102
SECURITY:NONE
ENCODING:USASCII
CHARSET:1252
COMPRESSION:NONE
OLDFILEUID:NONE
NEWFILEUID:NONE

<OFX><BANKMSGSRSV1><STMTTRNRS><TRNUID>1<STATUS><CODE>0<SEVERITY>INFO</STATUS>
<STMTRS><CURDEF>GBP<BANKACCTFROM><BANKID>1<ACCTID>2<ACCTTYPE>CHECKING</BANKACCTFROM>
<BANKTRANLIST><DTSTART>20260301<DTEND>20260331
<STMTTRN><TRNTYPE>DEBIT<DTPOSTED>20260305<TRNAMT>-12.50<FITID>F1<NAME>TESCO STORES</STMTTRN>
<STMTTRN><TRNTYPE>CREDIT<DTPOSTED>20260306<TRNAMT>3.99<FITID>F2<NAME>ARGOS</STMTTRN>
</BANKTRANLIST><LEDGERBAL><BALAMT>0<DTASOF>20260331</LEDGERBAL></STMTRS></STMTTRNRS>
</BANKMSGSRSV1></OFX>
"""
    lines = parse(raw, "ofx")
    assert [(ln.booked_on, ln.amount_pence, ln.reference) for ln in lines] == [
        (date(2026, 3, 5), 1_250, "F1"),
        (date(2026, 3, 6), -399, "F2"),
    ]
    assert "TESCO STORES" in lines[0].description
    with pytest.raises(UnprocessableError):
        parse(b"<OFX>not really", "ofx")


def test_each_line_takes_one_purchase_of_its_amount_near_its_day() -> None:
    purchases = [
        purchase("a", 1_250, "2026-03-04", "supermarket", "R-2041"),
        purchase("b", 1_250, "2026-03-05", "clothing"),  # nearer, but not its receipt
        purchase("c", 500, "2026-03-20"),  # too far from the line's day, after the last line
        purchase("d", 800, "2026-03-06"),  # no line: a purchase without one
        purchase("e", 900, "2026-04-30"),  # outside the statement's days: not listed
    ]
    lines = [
        line(1, 1_250, "2026-03-05", "TESCO STORES R-2041"),
        line(2, 1_250, "2026-03-06", "SOMEWHERE"),
        line(3, 500, "2026-03-10"),
        line(4, 700, "2026-03-12"),
    ]
    matched, unmatched, without = match(lines, purchases, tolerance_days=3)
    assert [(ln.number, p.vendor) for ln, p in matched] == [(1, "supermarket"), (2, "clothing")]
    assert [ln.number for ln in unmatched] == [3, 4]
    assert [p.amount_pence for p in without] == [800]


def test_a_purchase_is_matched_once_however_many_lines_could_take_it() -> None:
    purchases = [purchase("a", 1_000, "2026-03-05")]
    lines = [line(1, 1_000, "2026-03-05"), line(2, 1_000, "2026-03-05")]
    matched, unmatched, without = match(lines, purchases, tolerance_days=0)
    assert (len(matched), [ln.number for ln in unmatched], without) == (1, [2], [])


def _matched_by_model(
    lines: list[Line], purchases: list[Purchase], tolerance_days: int
) -> list[tuple[int, UUID]]:
    """The rule, read straight: each line in date order looks at every untaken purchase of
    its amount within the tolerance and takes the least by (not its receipt, not a vendor
    kind it names, days apart, day, id). Quadratic, and the independent model."""

    def words(text: str | None) -> set[str]:
        return {w for w in re.split(r"[^a-z0-9]+", (text or "").lower()) if len(w) >= 3}

    def names_receipt(p: Purchase, ln: Line) -> bool:
        refs = {ln.reference.lower(), *re.split(r"[^a-z0-9._/-]+", ln.description.lower())}
        return p.receipt_ref is not None and p.receipt_ref.lower() in refs

    taken: set[UUID] = set()
    found = []
    for ln in sorted(lines, key=lambda x: (x.booked_on, x.number)):
        candidates = [
            p
            for p in purchases
            if p.purchase_id not in taken
            and p.amount_pence == ln.amount_pence
            and abs((p.purchased_on - ln.booked_on).days) <= tolerance_days
        ]
        if candidates:
            best = min(
                candidates,
                key=lambda p: (
                    not names_receipt(p, ln),
                    not (words(p.vendor) & words(ln.description)),
                    abs((p.purchased_on - ln.booked_on).days),
                    p.purchased_on,
                    str(p.purchase_id),
                ),
            )
            taken.add(best.purchase_id)
            found.append((ln.number, best.purchase_id))
    return found


VENDORS = (None, "supermarket", "clothing", "food_and_drink")
WORDS = ("TESCO", "SUPERMARKET", "CLOTHING", "FOOD", "R-1", "R-2", "R-1/A", "X")


@given(
    st.lists(
        st.tuples(
            st.sampled_from((500, 1_000, 1_250)),
            st.integers(0, 9),
            st.sampled_from(VENDORS),
            st.sampled_from((None, "R-1", "R-2", "r-1")),
        ),
        max_size=25,
    ),
    st.lists(
        st.tuples(
            st.sampled_from((500, 1_000, 1_250)),
            st.integers(0, 9),
            st.lists(st.sampled_from(WORDS), max_size=3),
            st.sampled_from(("R-2", "TX")),
        ),
        min_size=1,
        max_size=25,
    ),
    st.integers(0, 3),
)
def test_matching_by_shelves_takes_what_the_rule_read_straight_takes(
    bought: list[tuple[int, int, str | None, str | None]],
    booked: list[tuple[int, int, list[str], str]],
    tolerance: int,
) -> None:
    """Random statements against random purchases (many of one amount, on the same days,
    with and without vendors and receipts): the indexed match and the model agree."""
    start = date(2026, 3, 1)
    purchases = [
        Purchase(
            uuid5(NAMESPACE_URL, f"p{n}"),
            uuid5(NAMESPACE_URL, f"r{n}"),
            "fam-1",
            pence,
            start + timedelta(days=day),
            vendor,
            receipt,
        )
        for n, (pence, day, vendor, receipt) in enumerate(bought)
    ]
    lines = [
        Line(n, start + timedelta(days=day), pence, " ".join(words), reference)
        for n, (pence, day, words, reference) in enumerate(booked, start=1)
    ]
    matched, unmatched, _ = match(lines, purchases, tolerance)
    assert [(ln.number, p.purchase_id) for ln, p in matched] == _matched_by_model(
        lines, purchases, tolerance
    )
    assert len(matched) + len(unmatched) == len(lines)


@pytest.mark.parametrize("amount", ["1e999999", "-1E+999999999", "1e-999999", "9" * 400])
def test_an_amount_beyond_any_budget_is_refused_not_a_500(amount: str) -> None:
    """A huge exponent overflowed Decimal's range on the way to pence: a 500, once."""
    raw = f"date,amount,description,reference\n2026-03-05,{amount},X,R\n".encode()
    with pytest.raises(UnprocessableError) as refused:
        parse(raw, "csv")
    assert refused.value.code == "unreadable_statement"
