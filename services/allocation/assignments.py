"""Checking a pilot's randomisation from its published history (pure): ``ledger audit
randomisation``.

While a trial runs, only each seed's commitment is published; once an admin reveals the
seeds (``pilot.randomisation_revealed``), anyone can check, from the allocation topic alone:

- that each revealed seed answers the commitment published with it;
- that each stratum's sequence under a seed is whole: places 0, 1, 2, ... each once (no
  assignment drawn and dropped, none skipped);
- that each recorded arm is the one the documented algorithm gives
  (:mod:`.randomisation`) from the seed, the stratum, the place and the ratio;
- that each family was enrolled in the arm it was randomised to.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from services.allocation.randomisation import arm_for
from shared.contracts.allocation import (
    FamilyEnrolled,
    FamilyRandomised,
    PilotConfigured,
    RandomisationRevealed,
    seed_commitment,
)
from shared.core.events import DomainEvent

__all__ = ["Check", "check"]


@dataclass
class Check:
    """What the check found."""

    recomputed: int = 0  # assignments recomputed from a revealed seed, and equal
    awaiting: int = 0  # assignments whose seed is not revealed yet
    commitments: set[str] = field(default_factory=set)
    problems: list[str] = field(default_factory=list)


def check(events: Iterable[DomainEvent]) -> Check:
    """Check a pilot's randomisations, given its events in recorded order."""
    found = Check()
    revealed: dict[str, str] = {}
    randomised: list[FamilyRandomised] = []
    enrolled: dict[str, str] = {}
    for event in events:
        if isinstance(event, PilotConfigured) and event.seed is not None:
            found.commitments.add(event.seed.commitment)
        elif isinstance(event, RandomisationRevealed):
            revealed |= _revealed(event, found)
        elif isinstance(event, FamilyRandomised):
            randomised.append(event)
        elif isinstance(event, FamilyEnrolled):
            enrolled[event.family_id] = event.arm
    _check_sequences(randomised, found)
    for event in randomised:
        if event.family_id in enrolled and enrolled[event.family_id] != event.arm:
            found.problems.append(
                f"family {event.family_id} was randomised to {event.arm} and enrolled in "
                f"{enrolled[event.family_id]}"
            )
        _recompute(event, revealed.get(event.seed_commitment), found)
    return found


def _revealed(event: RandomisationRevealed, found: Check) -> dict[str, str]:
    """The seeds an event reveals, each checked against its commitment."""
    for item in event.seeds:
        if seed_commitment(item.seed) != item.commitment:
            found.problems.append(
                f"the seed revealed for commitment {item.commitment} does not answer it"
            )
        elif item.commitment not in found.commitments:
            found.problems.append(f"a seed was revealed for {item.commitment}, never published")
    return {item.commitment: item.seed for item in event.seeds}


def _recompute(event: FamilyRandomised, seed: str | None, found: Check) -> None:
    if seed is None:
        found.awaiting += 1
        return
    arm = arm_for(seed, event.stratum, event.sequence, event.treatment_ratio, event.method)
    if arm != event.arm:
        found.problems.append(
            f"family {event.family_id}, place {event.sequence} of stratum {event.stratum}: "
            f"recorded {event.arm}, the seed gives {arm}"
        )
    else:
        found.recomputed += 1


def _check_sequences(randomised: list[FamilyRandomised], found: Check) -> None:
    places: dict[tuple[str, str], list[int]] = defaultdict(list)
    for event in randomised:
        places[event.seed_commitment, event.stratum].append(event.sequence)
    for (commitment, stratum), seen in sorted(places.items()):
        if sorted(seen) != list(range(len(seen))):
            found.problems.append(
                f"stratum {stratum} under {commitment[:12]}…: places {sorted(seen)} are not "
                f"0 to {len(seen) - 1}, each once"
            )
