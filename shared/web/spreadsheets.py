"""CSV that finance opens in a spreadsheet: no cell runs as a formula.

A cell that begins with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return is a formula to
Excel, LibreOffice and Google Sheets, and a formula can fetch from the network or run a
command (CSV injection). Text that begins so (a vendor, a bank statement's description,
"=HYPERLINK(…)") is written with a leading apostrophe, which spreadsheets read as "this is
text" and do not show; a negative amount is a number and stays one.
"""

from __future__ import annotations

import re

__all__ = ["safe_cell"]

_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"-?\d+(\.\d+)?")


def safe_cell(value: object) -> str:
    """A value as a CSV cell that a spreadsheet shows and never runs."""
    text = "" if value is None else str(value)
    if text.startswith(_FORMULA_STARTS) and not _NUMBER.fullmatch(text):
        return "'" + text
    return text
