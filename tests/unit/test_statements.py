"""Statement reconciliation's pure parts: reading CSV and OFX, and matching lines."""

from __future__ import annotations

from datetime import date
from uuid import NAMESPACE_URL, uuid5

import pytest

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
