"""Randomisation: each method as documented, reproducible, and how much it gives away."""

from __future__ import annotations

import hashlib
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.allocation.randomisation import Method, arm_for, block_of
from shared.contracts.allocation import ratio_fraction

RATIOS = st.sampled_from([0.5, 0.25, 0.75, 1 / 3, 2 / 3, 0.2, 0.4, 0.1])
SEEDS = st.text(min_size=1, max_size=30)
STRATA = st.sampled_from(["0-4", "5-9", "10-16", "_"])


def documented_block(seed: str, stratum: str, block: int, ratio: float) -> list[str]:
    """The algorithm as the module's docstring states it, written again independently."""
    fraction = Fraction(ratio).limit_denominator(20)
    size = fraction.denominator
    while size < 4:
        size *= 2
    treated = size * fraction.numerator // fraction.denominator
    slots = ["treatment"] * treated + ["control"] * (size - treated)
    for i in range(size - 1, 0, -1):
        attempt = 0
        while True:
            digest = hashlib.sha256(f"{seed}|{stratum}|{block}|{i}|{attempt}".encode()).digest()
            x = int.from_bytes(digest[:8], "big")
            if x < 2**64 - 2**64 % (i + 1):
                break
            attempt += 1
        j = x % (i + 1)
        slots[i], slots[j] = slots[j], slots[i]
    return slots


@given(seed=SEEDS, stratum=STRATA, block=st.integers(0, 50), ratio=RATIOS)
def test_blocks_follow_the_documented_algorithm(
    seed: str, stratum: str, block: int, ratio: float
) -> None:
    """An evaluator re-implementing the docstring gets the same arms."""
    assert list(block_of(seed, stratum, block, ratio)) == documented_block(
        seed, stratum, block, ratio
    )


def _documented_draw(prefix: str, i: int, bound: int) -> int:
    attempt = 0
    while True:
        digest = hashlib.sha256(f"{prefix}|{i}|{attempt}".encode()).digest()
        x = int.from_bytes(digest[:8], "big")
        if x < 2**64 - 2**64 % bound:
            return x % bound
        attempt += 1


def documented_simple(seed: str, stratum: str, index: int, ratio: float) -> str:
    fraction = Fraction(ratio).limit_denominator(20)
    draw = _documented_draw(f"{seed}|{stratum}|simple", index, fraction.denominator)
    return "treatment" if draw < fraction.numerator else "control"


def documented_permuted(seed: str, stratum: str, families: int, ratio: float) -> list[str]:
    fraction = Fraction(ratio).limit_denominator(20)
    arms: list[str] = []
    block = 0
    while len(arms) < families:
        size = fraction.denominator * (1 + _documented_draw(f"{seed}|{stratum}|size", block, 3))
        treated = size * fraction.numerator // fraction.denominator
        slots = ["treatment"] * treated + ["control"] * (size - treated)
        for i in range(size - 1, 0, -1):
            j = _documented_draw(f"{seed}|{stratum}|{block}", i, i + 1)
            slots[i], slots[j] = slots[j], slots[i]
        arms += slots
        block += 1
    return arms[:families]


@given(seed=SEEDS, stratum=STRATA, ratio=RATIOS, families=st.integers(1, 80))
@settings(max_examples=60)
def test_every_method_follows_its_documented_algorithm(
    seed: str, stratum: str, ratio: float, families: int
) -> None:
    """An evaluator re-implementing the docstring gets the same arms, for each method."""
    indices = range(families)
    assert [arm_for(seed, stratum, i, ratio, "simple") for i in indices] == [
        documented_simple(seed, stratum, i, ratio) for i in indices
    ]
    assert [
        arm_for(seed, stratum, i, ratio, "permuted_blocks") for i in indices
    ] == documented_permuted(seed, stratum, families, ratio)
    fixed = [arm_for(seed, stratum, i, ratio, "fixed_blocks") for i in indices]
    size = len(block_of(seed, stratum, 0, ratio))
    assert fixed == [documented_block(seed, stratum, i // size, ratio)[i % size] for i in indices]


@given(seed=SEEDS, stratum=STRATA, ratio=RATIOS)
@settings(max_examples=40)
def test_permuted_blocks_hold_the_ratio_in_every_block(
    seed: str, stratum: str, ratio: float
) -> None:
    """However big each block is drawn, it treats exactly its share."""
    fraction = ratio_fraction(ratio)
    arms = documented_permuted(seed, stratum, 300, ratio)
    treated = arms.count("treatment")
    # Blocks are at most 3 denominators long: never further off than one block.
    assert abs(treated - 300 * float(fraction)) <= 3 * fraction.denominator


def test_strata_are_randomised_independently() -> None:
    """Different strata and seeds give different sequences (the seed matters)."""
    methods: tuple[Method, ...] = ("simple", "permuted_blocks", "fixed_blocks")
    for method in methods:
        sequence = [arm_for("s", "0-4", i, 0.5, method) for i in range(40)]
        assert sequence != [arm_for("s", "5-9", i, 0.5, method) for i in range(40)]
        assert sequence != [arm_for("t", "0-4", i, 0.5, method) for i in range(40)]


def _guessed_right(arms: list[str]) -> int:
    """How often the best simple guess, from every earlier arm of the stratum, is right:
    the arm the sequence owes (the one behind), treatment on a tie."""
    right, treated = 0, 0
    for index, arm in enumerate(arms):
        behind = "treatment" if treated * 2 <= index else "control"
        right += int(behind == arm)
        treated += int(arm == "treatment")
    return right


def test_simple_randomisation_gives_a_guesser_no_edge_and_blocks_give_one() -> None:
    """Seeing every earlier arm of a stratum, a guesser of the next does no better than a
    coin with simple randomisation; with permuted blocks (random sizes) it does better,
    which the README says: 20 strata of 200 families, with seeds the guesser never sees."""
    families, strata = 200, 20
    tries = families * strata
    bounds: tuple[tuple[Method, float, float], ...] = (
        ("simple", 0.46, 0.54),
        ("permuted_blocks", 0.55, 0.75),
    )
    for method, low, high in bounds:
        right = sum(
            _guessed_right([arm_for(f"secret-{s}", "_", i, 0.5, method) for i in range(families)])
            for s in range(strata)
        )
        assert low <= right / tries <= high, (method, right / tries)


@pytest.mark.parametrize("ratio", [0.37, 0.0, 1.0, 0.999])
def test_ratios_that_are_not_small_fractions_are_refused(ratio: float) -> None:
    """Block randomisation needs a small denominator."""
    with pytest.raises(ValueError, match="treatment_ratio"):
        ratio_fraction(ratio)
