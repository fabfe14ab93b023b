"""Randomisation by permuted blocks: reproducible, balanced within strata, ratio respected."""

from __future__ import annotations

import hashlib
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.allocation.randomisation import arm_for, block_of
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


@given(seed=SEEDS, stratum=STRATA, ratio=RATIOS, families=st.integers(1, 120))
@settings(max_examples=60)
def test_arms_are_reproducible_and_balanced(
    seed: str, stratum: str, ratio: float, families: int
) -> None:
    """Same inputs, same arms; full blocks hold exactly the ratio; partial ones never overshoot."""
    arms = [arm_for(seed, stratum, index, ratio)[0] for index in range(families)]
    assert arms == [arm_for(seed, stratum, index, ratio)[0] for index in range(families)]
    fraction = ratio_fraction(ratio)
    size = len(block_of(seed, stratum, 0, ratio))
    per_block = size * fraction.numerator // fraction.denominator
    for start in range(0, families, size):
        chunk = arms[start : start + size]
        treated = chunk.count("treatment")
        if len(chunk) == size:
            assert treated == per_block
        else:
            assert treated <= per_block
            assert len(chunk) - treated <= size - per_block
    assert abs(arms.count("treatment") - families * float(fraction)) <= size


def test_strata_are_randomised_independently() -> None:
    """Different strata and seeds give different sequences (the seed matters)."""
    sequence = [arm_for("s", "0-4", i, 0.5)[0] for i in range(40)]
    assert sequence != [arm_for("s", "5-9", i, 0.5)[0] for i in range(40)]
    assert sequence != [arm_for("t", "0-4", i, 0.5)[0] for i in range(40)]


@pytest.mark.parametrize("ratio", [0.37, 0.0, 1.0, 0.999])
def test_ratios_that_are_not_small_fractions_are_refused(ratio: float) -> None:
    """Block randomisation needs a small denominator."""
    with pytest.raises(ValueError, match="treatment_ratio"):
        ratio_fraction(ratio)
