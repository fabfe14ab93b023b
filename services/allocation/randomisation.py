"""Randomisation to an arm, reproducible from the seed, the stratum and the enrolment order.

The seed is secret while a pilot randomises: the ledger draws it (256 bits), keeps it sealed,
and publishes only its commitment, ``SHA-256("ledger-randomisation-seed:" + seed)``, hex
(:func:`~shared.contracts.allocation.seed_commitment`). Once the trial closes an admin
reveals it, and anyone can check the commitment and recompute every assignment with the
algorithms below, in any language.

Common to all three: the treatment ratio is a fraction n/d with d <= 20 (0.5 = 1/2,
0.25 = 1/4). ``draw(prefix, i, m)`` takes SHA-256 of UTF-8 "<prefix>|<i>|<attempt>", reads
its first 8 bytes as a big-endian integer x, and returns x mod m unless x falls in the
incomplete top range (x >= 2^64 - 2^64 mod m), when it tries attempt + 1 (attempt starts
at 0). The k-th family randomised in a stratum with a given seed has index k (0, 1, ...).

- ``simple`` (the default): family k is treated when draw("<seed>|<stratum>|simple", k, d)
  < n. Each assignment is independent of every other: knowing all the earlier ones tells
  nothing of the next.
- ``permuted_blocks``: blocks of random size, each holding the ratio exactly. Block b's size
  is d * (1 + draw("<seed>|<stratum>|size", b, 3)) (for 1:1, 2, 4 or 6); blocks follow one
  another from index 0. A block of size B holds B*n/d treatment slots and the rest control,
  listed treatment first, shuffled by Fisher-Yates: for i = B-1 down to 1, j =
  draw("<seed>|<stratum>|<b>", i, i + 1), swap slots i and j. Balanced within every block,
  but someone who sees every earlier arm of a stratum can guess the next better than chance
  (fewer treatment slots left in a block make control likelier); random sizes only blunt it.
- ``fixed_blocks``: pilots randomised before 2026-12-02. Every block has size d, doubled
  while under 4 (1/2 -> 4, 1/3 -> 6, 1/4 -> 4); block b = k // B holds slot k % B; shuffled
  as above. Kept so that their assignments can be recomputed; no new pilot may choose it.
"""

from __future__ import annotations

import hashlib
from fractions import Fraction

from shared.contracts.allocation import Arm, RandomisationMethod, ratio_fraction

__all__ = ["Method", "arm_for", "block_of"]

Method = RandomisationMethod
_SPACE = 2**64


def _draw(prefix: str, i: int, bound: int) -> int:
    limit = _SPACE - _SPACE % bound
    attempt = 0
    while True:
        digest = hashlib.sha256(f"{prefix}|{i}|{attempt}".encode()).digest()
        value = int.from_bytes(digest[:8], "big")
        if value < limit:
            return value % bound
        attempt += 1  # pragma: no cover - happens about once in 2^60 draws


def _fixed_size(fraction: Fraction) -> int:
    size = fraction.denominator
    while size < 4:
        size *= 2
    return size


def _shuffled(prefix: str, size: int, fraction: Fraction) -> tuple[Arm, ...]:
    treated = size * fraction.numerator // fraction.denominator
    treatment: list[Arm] = ["treatment"]
    control: list[Arm] = ["control"]
    slots = treatment * treated + control * (size - treated)
    for i in range(size - 1, 0, -1):
        j = _draw(prefix, i, i + 1)
        slots[i], slots[j] = slots[j], slots[i]
    return tuple(slots)


def block_of(seed: str, stratum: str, block: int, ratio: float) -> tuple[Arm, ...]:
    """The shuffled arms of one block of ``fixed_blocks``."""
    fraction = ratio_fraction(ratio)
    return _shuffled(f"{seed}|{stratum}|{block}", _fixed_size(fraction), fraction)


def arm_for(seed: str, stratum: str, index: int, ratio: float, method: Method) -> Arm:
    """The arm of the ``index``-th family randomised in a stratum."""
    fraction = ratio_fraction(ratio)
    if method == "simple":
        draw = _draw(f"{seed}|{stratum}|simple", index, fraction.denominator)
        return "treatment" if draw < fraction.numerator else "control"
    if method == "fixed_blocks":
        block, slot = divmod(index, _fixed_size(fraction))
        return block_of(seed, stratum, block, ratio)[slot]
    block, start = 0, 0
    while True:
        size = fraction.denominator * (1 + _draw(f"{seed}|{stratum}|size", block, 3))
        if index < start + size:
            return _shuffled(f"{seed}|{stratum}|{block}", size, fraction)[index - start]
        block, start = block + 1, start + size
