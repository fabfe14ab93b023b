"""Randomisation to an arm by permuted blocks, reproducible from the seed and enrolment order.

The algorithm, so that an evaluator can recompute every assignment in any language:

1. The treatment ratio is a fraction n/d with d <= 20 (0.5 = 1/2, 0.25 = 1/4). The block
   size B is d, doubled while it is under 4 (1/2 -> 4, 1/3 -> 6, 1/4 -> 4); a block holds
   B*n/d treatment slots and the rest control, listed treatment first.
2. Within each stratum, the k-th family randomised with a given seed (k = 0, 1, …, in
   enrolment order) falls in block k // B at slot k % B.
3. Each block is shuffled by Fisher-Yates: for i = B-1 down to 1, j = draw(i+1), swap i, j;
   draw(m) takes SHA-256 of UTF-8 "<seed>|<stratum>|<block>|<i>|<attempt>", reads its first
   8 bytes as a big-endian integer x, and returns x mod m unless x falls in the incomplete
   top range (x >= 2^64 - 2^64 mod m), when it tries attempt + 1 (attempt starts at 0).
"""

from __future__ import annotations

import hashlib
from fractions import Fraction

from shared.contracts.allocation import Arm, ratio_fraction

__all__ = ["arm_for", "block_of"]

_SPACE = 2**64


def _block_size(fraction: Fraction) -> int:
    size = fraction.denominator
    while size < 4:
        size *= 2
    return size


def _draw(prefix: str, i: int, bound: int) -> int:
    limit = _SPACE - _SPACE % bound
    attempt = 0
    while True:
        digest = hashlib.sha256(f"{prefix}|{i}|{attempt}".encode()).digest()
        value = int.from_bytes(digest[:8], "big")
        if value < limit:
            return value % bound
        attempt += 1  # pragma: no cover - happens about once in 2^60 draws


def block_of(seed: str, stratum: str, block: int, ratio: float) -> tuple[Arm, ...]:
    """The shuffled arms of one block."""
    fraction = ratio_fraction(ratio)
    size = _block_size(fraction)
    treated = size * fraction.numerator // fraction.denominator
    treatment: list[Arm] = ["treatment"]
    control: list[Arm] = ["control"]
    slots = treatment * treated + control * (size - treated)
    prefix = f"{seed}|{stratum}|{block}"
    for i in range(size - 1, 0, -1):
        j = _draw(prefix, i, i + 1)
        slots[i], slots[j] = slots[j], slots[i]
    return tuple(slots)


def arm_for(seed: str, stratum: str, index: int, ratio: float) -> tuple[Arm, int]:
    """The arm of the ``index``-th family randomised in a stratum, and its block number."""
    size = _block_size(ratio_fraction(ratio))
    block, slot = divmod(index, size)
    return block_of(seed, stratum, block, ratio)[slot], block
