"""Shared pieces of the fuzz tests (tests/test_fuzz_*.py): hypothesis profiles, the
only-InputError check and JSON strategies.

Bounded for CI (the ``fuzz-ci`` profile, a few seconds per target); an opt-in long run uses
the ``fuzz-long`` profile::

    MOE_NETSIM_FUZZ=long PYTHONPATH=. python -m pytest -q tests/test_fuzz_*.py

(``MOE_NETSIM_FUZZ=<n>`` runs n random examples per target instead.)
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from traces.infra.errors import InputError

settings.register_profile(
    "fuzz-ci",
    max_examples=60,
    deadline=None,
    derandomize=True,  # CI runs the same examples every time (no flaky reds)
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.register_profile(
    "fuzz-long",
    max_examples=5000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
_MODE = os.environ.get("MOE_NETSIM_FUZZ", "")
FUZZ = settings.get_profile("fuzz-long" if _MODE == "long" else "fuzz-ci")
if _MODE.isdigit():  # MOE_NETSIM_FUZZ=<examples>: a random (not derandomised) run of that size
    FUZZ = settings(FUZZ, max_examples=int(_MODE), derandomize=False)


def only_input_errors(fn: Callable[[], Any]) -> None:
    """Run ``fn``; InputError (with a one-line message) is fine, success is fine."""
    try:
        fn()
    except InputError as exc:
        assert str(exc).strip() and "\n" not in str(exc).strip(), repr(str(exc))


json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                                max_size=4),
    max_leaves=12,
)


def _mutate_json(base: Any, path: list[Any], value: Any, delete: bool) -> Any:
    """Replace (or delete) the node at ``path`` (indices taken modulo the container size)."""
    if not path or not isinstance(base, (dict, list)) or not base:
        return value
    key = path[0]
    if isinstance(base, dict):
        keys = sorted(base)
        k = keys[key % len(keys)] if isinstance(key, int) else key
        out = dict(base)
        if delete and len(path) == 1:
            out.pop(k, None)
        else:
            out[k] = _mutate_json(base.get(k), path[1:], value, delete)
        return out
    i = key % len(base) if isinstance(key, int) else 0
    out_list = list(base)
    if delete and len(path) == 1:
        del out_list[i]
    else:
        out_list[i] = _mutate_json(base[i], path[1:], value, delete)
    return out_list


json_paths = st.lists(st.integers(min_value=0, max_value=50) | st.text(max_size=5), min_size=1,
                      max_size=4)
