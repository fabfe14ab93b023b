"""The ``ledger`` command's handling of what an operator types, before it touches anything."""

from __future__ import annotations

import logging

import pytest
from aiohttp.http_exceptions import LineTooLong

from shared.cli.main import main
from shared.core.logging import WithheldRequestBytes


@pytest.mark.parametrize("moment", ["yesterday", "2026-13-01T00:00:00Z", "2026-04-01T12:00:00"])
def test_a_bad_as_of_is_a_usage_error_not_a_traceback(
    moment: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Not a time, not a date, or no time zone: exit 2 with a sentence saying what to give."""
    with pytest.raises(SystemExit) as exit_:
        main(["audit", "replay", "--as-of", moment])
    assert exit_.value.code == 2
    error = capsys.readouterr().err
    assert "--as-of" in error
    assert "RFC 3339" in error
    assert "Traceback" not in error


def test_a_request_the_server_cannot_parse_is_logged_without_its_bytes() -> None:
    """aiohttp's report of an over-long header quotes its first 100 bytes: a token. The
    filter every service's log handler carries keeps the report and drops the quote."""
    error = LineTooLong(b"Bearer SECRET-TOKEN" + b"A" * 80, 8190)
    record = logging.LogRecord(
        "aiohttp.server",
        logging.ERROR,
        __file__,
        1,
        "Error handling request",
        (),
        (type(error), error, None),
    )
    assert WithheldRequestBytes().filter(record)
    text = logging.Formatter().format(record)
    assert "SECRET-TOKEN" not in text
    assert "LineTooLong" in text
