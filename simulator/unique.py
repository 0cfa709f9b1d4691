"""Distinct values of integer key arrays, by sorting (or counting, in a small key space).

numpy 2's ``np.unique`` (no ``return_*`` flags) goes through a hash table that, on the replay's
int64 keys (a layer's 10^5 (origin, host) or message keys), is 10-40x slower than sorting and
dropping repeats (measured on numpy 2.4: 81 ms against 2 ms for 130,000 keys); the replays
call it per layer, so they use :func:`sorted_unique`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def sorted_unique(values: np.ndarray) -> np.ndarray:
    """``np.unique(values)`` (sorted distinct values) of a 1-D array, by one sort."""
    s = np.sort(np.asarray(values).ravel())
    if s.size < 2:
        return s
    first = np.empty(s.size, dtype=bool)  # (np.r_ costs more than the comparison here)
    first[0] = True
    np.not_equal(s[1:], s[:-1], out=first[1:])
    return s[first]


# below this many keys of the key space per value, counting into the dense key space beats
# sorting the values
DENSE_KEYS_PER_VALUE = 8


def distinct_keys(values: np.ndarray, key_space: int) -> np.ndarray:
    """``sorted_unique(values)`` of non-negative keys below ``key_space``: by counting into
    the key space where it is small against the values, by sorting otherwise."""
    v = np.asarray(values).ravel()
    if key_space <= DENSE_KEYS_PER_VALUE * v.size:
        seen = np.zeros(key_space, dtype=bool)  # (np.flatnonzero is 2-3x faster on bools)
        seen[v] = True
        return np.flatnonzero(seen)
    return sorted_unique(v)


def rank_lookup(keys: np.ndarray, ranks: np.ndarray, key_space: int, lookups: int
                ) -> Callable[[np.ndarray], np.ndarray]:
    """The function mapping each of the sorted distinct ``keys`` (below ``key_space``) to its
    entry of ``ranks``: a table lookup where the key space is small against the ``lookups``
    (values to be looked up, about), a binary search otherwise."""
    if key_space <= DENSE_KEYS_PER_VALUE * lookups:
        table = np.full(key_space, -1, dtype=np.int64)
        table[keys] = ranks
        return table.__getitem__
    return lambda values: ranks[np.searchsorted(keys, values)]
