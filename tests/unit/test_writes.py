"""Writes composed into one statement: names and parameters kept apart, channels notified once."""

from __future__ import annotations

from shared.core.writes import Write, Writes


def test_writes_are_composed_with_their_own_names_and_parameters() -> None:
    """Each write's CTEs are renamed apart and its parameters renumbered after the writes
    before it; a CTE's reference to another of its write follows the rename; each channel
    is notified once, after every write."""
    appended = (
        ("appended", "INSERT INTO t (a, b) VALUES ($1, $2) RETURNING position"),
        ("queued", "INSERT INTO q (position, x) SELECT position, $3 FROM {appended}"),
    )
    writes = Writes()
    writes.add(Write(appended, ("a", "b", "x"), notify="outbox"))
    writes.add(Write.of("INSERT INTO i (k, v) VALUES ($1, $2)", "k", 10))
    writes.add(Write(appended, ("c", "d", "y"), notify="outbox"))
    statement, args = writes.statement()
    assert statement == (
        "WITH appended_0 AS (INSERT INTO t (a, b) VALUES ($1, $2) RETURNING position), "
        "queued_0 AS (INSERT INTO q (position, x) SELECT position, $3 FROM appended_0), "
        "written_1 AS (INSERT INTO i (k, v) VALUES ($4, $5)), "
        "appended_2 AS (INSERT INTO t (a, b) VALUES ($6, $7) RETURNING position), "
        "queued_2 AS (INSERT INTO q (position, x) SELECT position, $8 FROM appended_2)\n"
        "SELECT pg_notify($9, '')"
    )
    assert args == ["a", "b", "x", "k", 10, "c", "d", "y", "outbox"]


def test_writes_that_notify_nobody_end_in_an_empty_select() -> None:
    statement, args = Writes([Write.of("DELETE FROM t WHERE k = $1", "k")]).statement()
    assert statement == "WITH written_0 AS (DELETE FROM t WHERE k = $1)\nSELECT"
    assert args == ["k"]
