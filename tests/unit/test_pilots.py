"""The pilot decider: given events, when a command, then events or an error."""

from __future__ import annotations

from datetime import date

import pytest
from pydantic import ValidationError

from services.allocation import pilots
from shared.contracts import allocation as contract
from shared.contracts.periods import ALWAYS, PeriodLength
from shared.core.events import DomainEvent

CONFIG = contract.PilotConfig(
    name="Darlington",
    period_months=12,
    family_cap_pence=1_000_000,
    allocation=contract.Randomised(mode="randomised", treatment_ratio=0.5, seed="d"),
    categories=("practical", "other"),
)


def given(*events: DomainEvent) -> pilots.PilotState:
    state = pilots.initial_state()
    for event in events:
        state = pilots.evolve(state, event)
    return state


TODAY = date(2026, 3, 1)


def configured(version: int = 1, config: contract.PilotConfig = CONFIG) -> contract.PilotConfigured:
    lengths = (PeriodLength(since=ALWAYS, months=config.period_months),)
    return contract.PilotConfigured(
        pilot_id="d", version=version, config=config, period_lengths=lengths
    )


def test_first_configuration_is_version_one() -> None:
    """A new pilot gets version 1."""
    events = pilots.decide(given(), pilots.ConfigurePilot(pilot_id="d", config=CONFIG, today=TODAY))
    assert events == [configured()]


def test_unchanged_configuration_records_nothing() -> None:
    """Putting the same configuration again is not a new version."""
    assert (
        pilots.decide(
            given(configured()), pilots.ConfigurePilot(pilot_id="d", config=CONFIG, today=TODAY)
        )
        == []
    )


def test_changed_configuration_is_a_new_version() -> None:
    """A change makes version n+1."""
    changed = CONFIG.model_copy(update={"allocation": contract.EveryoneTreated()})
    events = pilots.decide(
        given(configured()), pilots.ConfigurePilot(pilot_id="d", config=changed, today=TODAY)
    )
    assert events == [configured(2, changed)]


@pytest.mark.parametrize(
    "change",
    [
        {"family_cap_pence": 0},
        {"period_months": 0},
        {"categories": ()},
        {"categories": ("a", "a")},
        {
            "approval_tiers": (
                {"up_to_pence": 500, "approver": "auto"},
                {"up_to_pence": 500, "approver": "manager"},
            )
        },
    ],
)
def test_invalid_configurations_are_refused(change: dict[str, object]) -> None:
    """Caps positive, periods at least a month, categories present and distinct, tiers ascending."""
    with pytest.raises(ValidationError):
        contract.PilotConfig.model_validate({**CONFIG.model_dump(), **change})


def test_a_new_period_length_applies_from_tomorrow() -> None:
    """Changing period_months adds a length from the day after the change; the first stays."""
    shorter = CONFIG.model_copy(update={"period_months": 1})
    [event] = pilots.decide(
        given(configured()), pilots.ConfigurePilot(pilot_id="d", config=shorter, today=TODAY)
    )
    assert isinstance(event, contract.PilotConfigured)
    assert event.period_lengths == (
        PeriodLength(since=ALWAYS, months=12),
        PeriodLength(since=date(2026, 3, 2), months=1),
    )
