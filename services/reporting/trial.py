"""The trial dataset for evaluators: one row per enrolled family, pseudonymous, with a
Frictionless Data Package descriptor (pure, but for the per-pilot secret's keeping).

Intention to treat: every family enrolled appears in the arm it was randomised to, whatever
happened later (an exit, an erasure, no spend at all). A family's id is replaced by
HMAC-SHA256 of it under a secret of the pilot's own, kept sealed in reporting's database:
stable within the pilot, different in every other, and not reversible without the secret.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import json
import secrets
import statistics
import zipfile
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, get_args

from services.reporting.uptake import (
    Facts,
    hours_to_decision_by_family,
    spent_by_category_by_family,
)
from shared.contracts.allocation import Outcome
from shared.core.db import Connection
from shared.core.personal import Sealer

__all__ = ["COLUMNS", "Column", "columns_of", "package", "pilot_secret", "pseudonym", "rows"]

DATA_FILE = "trial-dataset.csv"
_LOAD_SEALED = "SELECT secret FROM trial_secrets WHERE pilot_id = $1"
_STORE_SEALED = """
INSERT INTO trial_secrets (pilot_id, secret) VALUES ($1, $2) ON CONFLICT (pilot_id) DO NOTHING
"""


@dataclass(frozen=True)
class Column:
    """One column: its name, its Table Schema type and what it means."""

    name: str
    type: str  # string, date, integer, number, boolean
    description: str
    pence: bool = False


# The columns every pilot has, in order; then spent_<category>_pence for each category, and
# outcome_<outcome>_on for each outcome (columns_of).
COLUMNS = (
    Column(
        "participant_id",
        "string",
        "The family, pseudonymous: HMAC-SHA256 of its id under "
        "a secret of the pilot's own (stable within the pilot, not reversible without it).",
    ),
    Column(
        "arm",
        "string",
        "The arm the family was randomised to (treatment or control); "
        "intention to treat: kept whatever happened later.",
    ),
    Column("stratum", "string", "The stratum it was randomised within (empty if none)."),
    Column("enrolled_on", "date", "The day it was enrolled."),
    Column("exited_on", "date", "The day it left the pilot (empty if it has not)."),
    Column(
        "allocated_pence",
        "integer",
        "Allocations and top-ups less the cuts approval accepted, every period.",
        pence=True,
    ),
    Column("spent_pence", "integer", "Purchases minus refunds.", pence=True),
    Column("requests", "integer", "Spend requests made."),
    Column("approvals", "integer", "Requests approved (automatically or by a manager)."),
    Column("rejections", "integer", "Requests rejected (insufficient funds or by a manager)."),
    Column(
        "median_hours_to_decision",
        "number",
        "Median hours from request to its first approval or rejection (empty if none was decided).",
    ),
    Column("told_budget", "boolean", "Whether the family was told what its budget is."),
)


def columns_of(categories: Sequence[str]) -> tuple[Column, ...]:
    """Every column of a pilot's dataset: the common ones, then per category and outcome."""
    return (
        *COLUMNS,
        *(
            Column(
                f"spent_{category}_pence",
                "integer",
                f"Purchases minus refunds in the category {category}.",
                pence=True,
            )
            for category in categories
        ),
        *(
            Column(
                f"outcome_{outcome}_on",
                "date",
                f"The day the outcome {outcome} was first recorded (empty if never).",
            )
            for outcome in get_args(Outcome)
        ),
    )


def pseudonym(secret: bytes, family_id: str) -> str:
    """A family's id in the dataset: 128 bits of HMAC-SHA256, hex."""
    return hmac.new(secret, family_id.encode(), hashlib.sha256).hexdigest()[:32]


async def pilot_secret(conn: Connection, sealer: Sealer, pilot_id: str) -> bytes:
    """The pilot's pseudonymisation secret, made on first use and kept sealed."""
    subject = f"trial:{pilot_id}"
    sealed = await conn.fetchval(_LOAD_SEALED, pilot_id)
    if sealed is None:
        made = await sealer.seal(conn, subject, secrets.token_hex(32))
        await conn.execute(_STORE_SEALED, pilot_id, made)  # a concurrent first use may win
        sealed = await conn.fetchval(_LOAD_SEALED, pilot_id)
    opened = await sealer.open(conn, subject, sealed)
    assert opened is not None
    return bytes.fromhex(opened)


def rows(facts: Facts, categories: Sequence[str], secret: bytes) -> list[dict[str, Any]]:
    """One row per enrolled family, ordered by participant id (not enrolment order).

    Each family's counts are gathered in one pass over the facts, not one pass per family:
    a pilot of thousands of families is one pass, not thousands."""
    requests: Counter[str] = Counter(asked for asked, _, _ in facts.requests.values())
    verdicts = Counter(facts.verdicts)
    hours_of: dict[str, list[float]] = defaultdict(list)
    for decided_family, taken in hours_to_decision_by_family(facts):
        hours_of[decided_family].append(taken)
    spent_of = spent_by_category_by_family(facts)
    found = []
    for family_id, family in facts.families.items():
        if family.enrolled_on is None:
            continue  # events of a family whose enrolment this pilot does not hold
        hours = hours_of.get(family_id, [])
        by_category = spent_of.get(family_id, {})
        row: dict[str, Any] = {
            "participant_id": pseudonym(secret, family_id),
            "arm": family.arm,
            "stratum": family.stratum,
            "enrolled_on": family.enrolled_on,
            "exited_on": family.exited_on,
            "allocated_pence": family.allocated,
            "spent_pence": family.net_spend,
            "requests": requests[family_id],
            "approvals": verdicts[family_id, "approved"],
            "rejections": verdicts[family_id, "rejected"],
            "median_hours_to_decision": round(statistics.median(hours), 4) if hours else None,
            "told_budget": family.told,
        }
        row |= {f"spent_{c}_pence": by_category.get(c, 0) for c in categories}
        row |= {f"outcome_{o}_on": family.outcomes.get(o) for o in get_args(Outcome)}
        found.append(row)
    return sorted(found, key=lambda row: row["participant_id"])


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def package(pilot_id: str, columns: Sequence[Column], table: Sequence[dict[str, Any]]) -> bytes:
    """A zip of the CSV and its ``datapackage.json``, as Frictionless tools read them."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(column.name for column in columns)
    writer.writerows([_cell(row[column.name]) for column in columns] for row in table)
    descriptor = {
        "name": f"{pilot_id}-trial-dataset",
        "title": f"Trial dataset of the pilot {pilot_id}",
        "description": "One row per enrolled family, by the arm it was randomised to "
        "(intention to treat). Money is in integer pence.",
        "resources": [
            {
                "name": "trial-dataset",
                "path": DATA_FILE,
                "profile": "tabular-data-resource",
                "format": "csv",
                "mediatype": "text/csv",
                "encoding": "utf-8",
                "schema": {
                    "fields": [_field(column) for column in columns],
                    "primaryKey": ["participant_id"],
                    "missingValues": [""],
                },
            }
        ],
    }
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zipped:
        zipped.writestr("datapackage.json", json.dumps(descriptor, indent=2))
        zipped.writestr(DATA_FILE, text.getvalue())
    return archive.getvalue()


def _field(column: Column) -> dict[str, Any]:
    field: dict[str, Any] = {
        "name": column.name,
        "type": column.type,
        "description": column.description + (" In pence." if column.pence else ""),
    }
    if column.name in {"participant_id", "arm", "enrolled_on"}:
        field["constraints"] = {"required": True}
    if column.name == "arm":
        field["constraints"]["enum"] = ["treatment", "control"]
    if column.pence:
        field["unit"] = "pence"  # an extra property, as Table Schema allows
    return field
