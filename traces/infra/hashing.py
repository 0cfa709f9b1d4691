"""One stable hash for the whole project (FNV-1a, 64 bits): the same on every run, machine and
Python version, unlike ``hash()``; used where a fixed pseudo-random order is wanted."""

from __future__ import annotations

from collections.abc import Iterable

FNV_OFFSET_64 = 1469598103934665603
FNV_PRIME_64 = 1099511628211
MASK_64 = 0xFFFFFFFFFFFFFFFF


def fnv1a_64(values: Iterable[int]) -> int:
    """FNV-1a over ``values`` (bytes, or any non-negative words folded in one at a time).

    >>> fnv1a_64(b"a") == 0xAF63DC4C8601EC8C  # the published FNV-1a 64 value of "a"
    True
    """
    h = FNV_OFFSET_64
    for v in values:
        h = ((h ^ v) * FNV_PRIME_64) & MASK_64
    return h


def fnv1a_64_text(*parts: object) -> int:
    """FNV-1a of the parts' text joined by the unit separator (0x1f), UTF-8 encoded."""
    return fnv1a_64("\x1f".join(map(str, parts)).encode())
