"""Shared fixtures: real-data locations (skip when absent) and figure cleanup."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# The real data sits beside the checkout (../shared/data), as in CI; MOE_NETSIM_SHARED_DATA
# points elsewhere (e.g. from a git worktree).
SHARED_DATA = Path(os.environ.get("MOE_NETSIM_SHARED_DATA", ROOT.parent / "shared" / "data"))


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture
def esft_dir() -> Path:
    d = SHARED_DATA / "esft-routing"
    if not d.is_dir():
        pytest.skip("real ESFT routing data not present (../shared/data/esft-routing)")
    return d


@pytest.fixture
def sglang_dir() -> Path:
    d = SHARED_DATA / "sglang-ep-statistics"
    if not d.is_dir():
        pytest.skip("real SGLang statistics not present (../shared/data/sglang-ep-statistics)")
    return d
