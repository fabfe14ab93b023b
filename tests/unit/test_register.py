"""A stratum's randomisation register: given events, when a family is randomised, then its arm."""

from __future__ import annotations

from datetime import date

from services.allocation import register
from shared.contracts import allocation as contract
from shared.core.events import DomainEvent
from tests.unit.test_pilots import CONFIG


def given(*events: DomainEvent) -> register.RegisterState:
    state = register.initial_state()
    for event in events:
        state = register.evolve(state, event)
    return state


def randomise(
    family: str, config: contract.PilotConfig = CONFIG, earlier: int = 0, seed: str = "d"
) -> register.RandomiseFamily:
    return register.RandomiseFamily(
        family_id=family,
        stratum="0-4",
        enrolled_on=date(2026, 1, 1),
        config=config,
        pilot_version=1,
        seed=seed,
        commitment=contract.seed_commitment(seed),
        earlier=earlier,
    )


D = contract.seed_commitment("d")


def test_a_register_numbers_its_families_from_zero_in_enrolment_order() -> None:
    """Each randomisation takes the next place in the stratum's sequence for its seed."""
    [first] = register.decide(given(), randomise("a"))
    [second] = register.decide(given(first), randomise("b"))
    assert isinstance(first, contract.FamilyRandomised)
    assert isinstance(second, contract.FamilyRandomised)
    assert (first.sequence, second.sequence) == (0, 1)
    assert first.pilot_version == 1


def test_randomisations_in_the_pilot_stream_carry_on_the_sequence() -> None:
    """A pilot randomised before registers had streams: its families count first."""
    [event] = register.decide(given(), randomise("a", earlier=5))
    assert isinstance(event, contract.FamilyRandomised)
    assert event.sequence == 5


def test_a_new_seed_starts_its_own_sequence() -> None:
    """Counts are per seed: a pilot that changes its seed randomises afresh."""
    [first] = register.decide(given(), randomise("a"))
    [event] = register.decide(given(first), randomise("b", seed="e-kept-secret"))
    assert isinstance(event, contract.FamilyRandomised)
    assert (event.seed_commitment, event.sequence) == (contract.seed_commitment("e-kept-secret"), 0)
    assert "e-kept-secret" not in event.model_dump_json()  # the seed itself is in no event


def test_no_randomisation_when_everyone_is_treated() -> None:
    """A pilot in mode all records no register event."""
    everyone = CONFIG.model_copy(update={"allocation": contract.EveryoneTreated()})
    assert register.decide(given(), randomise("a", everyone)) == []


def test_the_last_event_alone_says_where_its_seed_stands() -> None:
    """Folding only the last event gives the next place the whole stream gives, for its seed;
    for a seed only earlier events used, the whole stream is needed (and says so)."""
    events: list[DomainEvent] = []
    for family in "abcde":
        [event] = register.decide(given(*events), randomise(family))
        events.append(event)
    whole, last = given(*events), given(events[-1])
    assert whole.following[D] == last.following[D] == 5
    [other] = register.decide(whole, randomise("f", seed="e"))
    assert not given(other).knows(D)
    assert given(*events, other).following[D] == 5
