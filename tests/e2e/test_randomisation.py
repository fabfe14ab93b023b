"""Allocation concealment, tried as a social worker would try to steer it.

The worker reads everything a worker may (the pilot's configuration, the arm of each
family they enrol) and before each enrolment guesses its arm: with the seed, if any answer
gave it away (the pilot's configuration used to), by the documented algorithm; else by the
arm the stratum's sequence owes so far. Then the trial closes, the seeds are revealed, and
``ledger audit randomisation`` recomputes every assignment against its commitment.
"""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from services.allocation.randomisation import arm_for
from shared.core.settings import Settings
from shared.web.batches import NDJSON
from tests.e2e.system import System, running_system
from tests.support import read_topic, run_ledger

FAMILIES = 240
STRATA = ("younger", "older")


@pytest.fixture
async def system(settings: Settings, token: Callable[..., str]) -> AsyncIterator[System]:
    async with running_system(settings, token) as system:
        await system.configure(
            allocation={"mode": "randomised", "treatment_ratio": 0.5, "strata": list(STRATA)}
        )
        yield system


def guess(config: dict[str, Any], stratum: str, earlier: list[str]) -> str:
    """The worker's best guess at the next arm of a stratum, from what they can read."""
    allocation = config["allocation"]
    seed = allocation.get("seed")
    if seed is not None:  # given away: the next arm follows
        return arm_for(seed, stratum, len(earlier), allocation["treatment_ratio"], "fixed_blocks")
    treated = earlier.count("treatment")
    return "treatment" if 2 * treated <= len(earlier) else "control"


async def test_a_worker_with_everything_they_can_read_guesses_no_better_than_chance(
    system: System, settings: Settings
) -> None:
    """240 guesses of the next arm, each from the configuration and every arm seen before,
    are right about half the time (they were right every time: the seed was in the
    configuration); revealed, the seed answers its commitment and recomputes every arm."""
    worker = system.worker()
    shown = await system.allocation.get("/pilots/wigan", headers=worker)
    pilot = await shown.json()
    assert "seed" not in json.dumps(pilot["config"])
    seen: dict[str, list[str]] = {stratum: [] for stratum in STRATA}
    right = 0
    for first in range(0, FAMILIES, 60):
        lines: list[dict[str, Any]] = []
        guesses: list[str] = []
        for number in range(first, first + 60):
            stratum = STRATA[number % 2]
            lines.append(
                {
                    "method": "POST",
                    "path": "/pilots/wigan/families",
                    "idempotency_key": f"enrol-{number}",
                    "body": {
                        "family_id": f"f-{number}",
                        "team": "t-1",
                        "worker": "sw-1",
                        "enrolled_on": "2026-01-05",
                        "stratum": stratum,
                    },
                }
            )
        response = await system.allocation.post(
            "/pilots/wigan/batches",
            data="".join(json.dumps(line) + "\n" for line in lines),
            headers={**worker, "Content-Type": NDJSON},
        )
        answers = [json.loads(line) for line in (await response.text()).splitlines()]
        assert {answer["status"] for answer in answers} == {201}
        for line, answer in zip(lines, answers, strict=True):
            stratum = line["body"]["stratum"]
            guesses.append(guess(pilot["config"], stratum, seen[stratum]))
            seen[stratum].append(answer["body"]["arm"])
            right += guesses[-1] == answer["body"]["arm"]
    # No better than a coin: within four standard deviations of half.
    assert right <= FAMILIES / 2 + 4 * math.sqrt(FAMILIES / 4), right

    records = await read_topic(settings, "ledger.allocation", expect=FAMILIES * 3 + 1)
    revealed = await system.allocation.post(
        "/pilots/wigan/randomisation/reveal",
        json={"revealed_on": "2026-12-01"},
        headers=system.admin(),
    )
    assert revealed.status == 200, await revealed.text()
    [seed] = (await revealed.json())["revealed_seeds"]
    assert seed["commitment"] == pilot["seed_commitment"]
    assert not any(seed["seed"] in json.dumps(record.value) for record in records)
    code, output = await run_ledger(settings, "audit", "randomisation", "--pilot", "wigan")
    assert code == 0, output
    assert f"ok: {FAMILIES} assignments recomputed" in output
