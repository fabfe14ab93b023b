"""The pilot decider: given events, when a command, then events or an error."""

from __future__ import annotations

from datetime import date

import pytest
from pydantic import ValidationError

from services.allocation import pilots
from shared.contracts import allocation as contract
from shared.contracts.periods import ALWAYS, PeriodLength
from shared.core.errors import ConflictError
from shared.core.events import DomainEvent

CONFIG = contract.PilotConfig(
    name="Darlington",
    period_months=12,
    family_cap_pence=1_000_000,
    allocation=contract.Randomised(mode="randomised", treatment_ratio=0.5, strata=("0-4", "5-9")),
    categories=("practical", "other"),
)


def given(*events: DomainEvent) -> pilots.PilotState:
    state = pilots.initial_state()
    for event in events:
        state = pilots.evolve(state, event)
    return state


TODAY = date(2026, 3, 1)
SEED = contract.Seed(commitment=contract.seed_commitment("s1"), sealed="sealed:v1:…s1")
FRESH = contract.Seed(commitment=contract.seed_commitment("s2"), sealed="sealed:v1:…s2")


def configured(
    version: int = 1, config: contract.PilotConfig = CONFIG, seed: contract.Seed | None = SEED
) -> contract.PilotConfigured:
    lengths = (PeriodLength(since=ALWAYS, months=config.period_months),)
    randomised = isinstance(config.allocation, contract.Randomised)
    return contract.PilotConfigured(
        pilot_id="d",
        version=version,
        config=config,
        period_lengths=lengths,
        seed=seed if randomised else None,
    )


def configure(
    config: contract.PilotConfig = CONFIG, fresh: contract.Seed = SEED
) -> pilots.ConfigurePilot:
    return pilots.ConfigurePilot(pilot_id="d", config=config, today=TODAY, fresh_seed=fresh)


def test_first_configuration_is_version_one_with_a_seed_of_the_ledgers() -> None:
    """A new randomised pilot gets version 1 and the seed the handler drew."""
    assert pilots.decide(given(), configure()) == [configured()]


def test_unchanged_configuration_records_nothing() -> None:
    """Putting the same configuration again is not a new version, nor a new seed."""
    assert pilots.decide(given(configured()), configure(fresh=FRESH)) == []


def test_changed_configuration_is_a_new_version() -> None:
    """A change makes version n+1; the seed stays while it is secret."""
    changed = CONFIG.model_copy(update={"family_cap_pence": 2_000_000})
    assert pilots.decide(given(configured()), configure(changed, FRESH)) == [configured(2, changed)]
    everyone = CONFIG.model_copy(update={"allocation": contract.EveryoneTreated()})
    assert pilots.decide(given(configured()), configure(everyone, FRESH)) == [
        configured(2, everyone)
    ]


def test_a_public_or_revealed_seed_is_replaced_by_the_next_configuration() -> None:
    """A pilot that chose its seed by hand (version 3 of the event) or revealed it gets a
    secret one when configured again, the same configuration or not; then no other."""
    old = contract.Seed(commitment=contract.seed_commitment("mine"), public="mine")
    for before in (
        given(configured(seed=old)),
        given(
            configured(),
            contract.RandomisationRevealed(
                pilot_id="d",
                seeds=(contract.RevealedSeed(commitment=SEED.commitment, seed="s1"),),
                revealed_on=TODAY,
            ),
        ),
    ):
        assert before.secret_seed() is None
        [event] = pilots.decide(before, configure(fresh=FRESH))
        assert isinstance(event, contract.PilotConfigured)
        assert (event.version, event.seed) == (2, FRESH)
        assert pilots.evolve(before, event).secret_seed() == FRESH


def test_revealing_publishes_every_seed_once() -> None:
    """Each seed the pilot used, public ones as they were, sealed ones as opened; again,
    there is nothing to reveal (409)."""
    old = contract.Seed(commitment=contract.seed_commitment("mine"), public="mine")
    state = given(configured(seed=old), configured(2))
    reveal = pilots.RevealSeeds(pilot_id="d", opened={SEED.commitment: "s1"}, revealed_on=TODAY)
    [event] = pilots.decide(state, reveal)
    assert isinstance(event, contract.RandomisationRevealed)
    assert {(s.commitment, s.seed) for s in event.seeds} == {
        (old.commitment, "mine"),
        (SEED.commitment, "s1"),
    }
    with pytest.raises(ConflictError) as refused:
        pilots.decide(pilots.evolve(state, event), reveal)
    assert refused.value.code == "nothing_to_reveal"


def test_a_version_3_configuration_reads_with_its_seed_public() -> None:
    """Events recorded before seeds were secret: the seed leaves the configuration, public,
    with its commitment, and its blocks read as fixed_blocks."""
    data = {
        "pilot_id": "d",
        "version": 1,
        "config": {
            **CONFIG.model_dump(mode="json"),
            "allocation": {"mode": "randomised", "treatment_ratio": 0.5, "seed": "mine"},
        },
        "period_lengths": [{"since": ALWAYS.isoformat(), "months": 12}],
    }
    upcast = contract.REGISTRY.upcasters[("pilot.configured", 3)](data)
    event = contract.PilotConfigured.model_validate(upcast)
    assert event.seed == contract.Seed(commitment=contract.seed_commitment("mine"), public="mine")
    assert isinstance(event.config.allocation, contract.Randomised)
    assert event.config.allocation.method == "fixed_blocks"


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
    [event] = pilots.decide(given(configured()), configure(shorter))
    assert isinstance(event, contract.PilotConfigured)
    assert event.period_lengths == (
        PeriodLength(since=ALWAYS, months=12),
        PeriodLength(since=date(2026, 3, 2), months=1),
    )
