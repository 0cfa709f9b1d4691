"""Benchmark of migration-aware re-placement on every kind of drift the issue names.

    PYTHONPATH=. python benchmarks/bench_rebalance_drift.py [--kind K ...] [--strategy S ...]

Kinds (parameters fixed before any result was seen; the values of the docs' examples):

* ``tenants``: two tenants whose shares of sequences change linearly over the trace, 3 -> 1
  and 1 -> 3 (docs/howto/synthetic-traces.md's drift example); GPUs in proportion to the
  shares (the generator's default), each tenant its own popularity.
* ``gradual``: one workload whose popularity drifts gradually: ``--drift-every 20`` (the same
  example), a new phase every 20 steps blended in over 20 steps.
* ``phase``: one abrupt phase change at mid-trace (``--phase-change``, ramp 0, the default).
* ``esft``: the four real ESFT tasks one after the other (intent, law, summary, translation;
  ``trace concat --missing-steps sequence``, one step per sequence); skipped when the data is
  absent.

Every synthetic trace: DeepSeekMoE-16B, 32,768 tokens, sequences of 16, 256 tokens a step (128
steps), seed 1, the generator's defaults otherwise (as the ``shift`` part of
bench_rebalance.py).  Cluster: the 4-server fat tree of 32 GPUs.  Policies: interval = window =
16 steps.  Per strategy (``dedup``, ``ilp-load``, ``eplb``: the migration-aware ones):
``static``, ``periodic`` (the full re-fit), ``budget`` (periodic within a quarter of the bytes
periodic moves per rebalance) and, for ``ilp-load``, ``price`` (``--move-weight 0.1``).  Each
row: the share of the full re-fit's gain kept after the drift's onset, in de-duplicated copies
per token-layer, hops per token and mean GPU max/mean load, the share of its bytes, and the
break-even step (the first window end where the network bytes saved against static cover the
bytes moved; ``payback``: the steps one rebalance's bytes need at the mean saving per step
after the onset, for traces too short to reach it).  Target per row: >= 80 % of the traffic
gain (``dedup``: copies; ``ilp-load``: hops; ``eplb`` has no traffic objective) and of the
balance gain at <= 25 % of the bytes.  The header line gives how much the full re-fit gains
against static (the degradation there is to recover): shares of a gain of a fraction of a
percent are noise.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments.rebalance import run_rebalance, summarize  # noqa: E402
from experiments.rebalance_config import RebalanceConfig  # noqa: E402
from simulator.cluster.builders import build_fat_tree  # noqa: E402
from simulator.cluster.paths import build_route_table  # noqa: E402
from traces import SynthConfig, model_preset  # noqa: E402
from traces.io import write_blocks  # noqa: E402
from traces.synthetic import TenantSpec, iter_synthetic  # noqa: E402

ESFT = Path(__file__).resolve().parents[2] / "shared" / "data" / "esft-routing"
ESFT_TASKS = ("intent", "law", "summary", "translation")
TOKENS, SEQ_LEN, STEP_TOKENS, STEPS = 32768, 16, 256, 128
DRIFT_EVERY = 20  # docs/howto/synthetic-traces.md's example
INTERVAL = WINDOW = 16
MOVE_WEIGHT = 0.1  # as bench_rebalance.py's price-only run
BUDGET_SHARE = 0.25  # the target's share of the full re-fit's bytes
KEEP_TARGET = 0.80
TRAFFIC = {"dedup": "remote_copies_per_token_layer", "ilp-load": "hops_per_token", "eplb": None}
BALANCE = "gpu_load_max_over_mean"
KINDS = ("tenants", "gradual", "phase", "esft")


def drift_trace(d: Path, kind: str) -> tuple[Path, int]:
    """The trace of one kind of drift and the step at which its drift begins."""
    path = d / f"{kind}.parquet"
    if kind == "esft":
        return _esft_concat(d, path)
    m = model_preset("deepseek-moe-16b")
    extra: dict = {}
    onset = 0
    if kind == "tenants":
        extra["tenants"] = (TenantSpec(3.0, share_end=1.0, name="a"),
                            TenantSpec(1.0, share_end=3.0, name="b"))
    elif kind == "gradual":  # as trace synth --drift-every 20
        extra["phase_steps"] = tuple(range(DRIFT_EVERY, STEPS, DRIFT_EVERY))
        extra["drift_ramp_steps"] = DRIFT_EVERY
        onset = DRIFT_EVERY
    elif kind == "phase":
        onset = STEPS // 2
        extra["phase_steps"] = (onset,)
    cfg = SynthConfig(m, num_tokens=TOKENS, seq_len=SEQ_LEN, step_tokens=STEP_TOKENS,
                      num_gpus=32, seed=1, **extra)
    write_blocks(path, iter_synthetic(cfg))
    return path, onset


def _esft_concat(d: Path, out: Path) -> tuple[Path, int]:
    from traces.concat import concat_trace_files
    from traces.importers.esft import iter_esft

    parts = []
    for task in ESFT_TASKS:
        parts.append(d / f"esft-{task}.parquet")
        write_blocks(parts[-1], iter_esft(ESFT / task))
    concat_trace_files(parts, out, missing_steps="sequence")
    first = pd.read_parquet(parts[0], columns=["seq_id"])
    return out, int(first.seq_id.nunique())  # steps of the first task: the first shift


@dataclass(frozen=True)
class Row:
    """One migration-aware run against the full re-fit, after the drift's onset."""

    kind: str
    strategy: str
    run: str
    traffic: float | None  # share of the full re-fit's traffic gain kept (None: no gain)
    copies: float | None
    hops: float | None
    balance: float | None
    bytes_share: float
    break_even_step: int | None
    payback_steps: float | None  # steps of the post-onset saving one rebalance's bytes cost
    cpu_s: float

    def met(self) -> str:
        kept = [v for v in (self.traffic, self.balance) if v is not None]
        if not kept:
            return "n/a (the full re-fit gains nothing)"
        ok = all(v >= KEEP_TARGET for v in kept) and self.bytes_share <= BUDGET_SHARE
        return "met" if ok else "NOT met"


def _share(gain: float, full: float) -> float | None:
    return gain / full if full > 1e-9 else None


def measure(kind: str, path: Path, onset: int, routes, strategy: str,  # noqa: ANN001
            out=print) -> list[Row]:  # noqa: ANN001
    """Run static, periodic and the migration-aware runs; print and return their rows."""
    base = RebalanceConfig(strategy=strategy, policy="static", interval_steps=INTERVAL,
                           window_steps=WINDOW)
    runs: dict[str, pd.DataFrame] = {}
    cpu: dict[str, float] = {}

    def run(name: str, config: RebalanceConfig) -> None:
        t0 = time.process_time()
        runs[name] = run_rebalance(path, routes, config).timeline
        cpu[name] = time.process_time() - t0

    run("static", base)
    run("periodic", replace(base, policy="periodic"))
    per = runs["periodic"]["bytes_migrated"]
    budget = BUDGET_SHARE * float(per[per > 0].mean()) if (per > 0).any() else 0.0
    run("budget", replace(base, policy="periodic", move_budget_bytes=budget))
    if strategy.startswith("ilp"):
        run("price", replace(base, policy="periodic", move_weight=MOVE_WEIGHT))
    st = runs["static"]
    after = (st["step_start"] >= onset).to_numpy()

    def mean_after(t: pd.DataFrame, col: str) -> float:
        return float(t[col].to_numpy()[after].mean())

    full = {c: mean_after(st, c) - mean_after(runs["periodic"], c)
            for c in ("remote_copies_per_token_layer", "hops_per_token", BALANCE)}
    first = st.iloc[0]
    out(f"{kind} / {strategy}: drift from step {onset}; static first window copies"
        f" {first['remote_copies_per_token_layer']:.4f}, hops {first['hops_per_token']:.1f},"
        f" GPU max/mean {first[BALANCE]:.3f}; budget {budget / 1e9:.2f} GB/rebalance;"
        " full re-fit gains " + ", ".join(
            f"{c.split('_')[0]} {full[c] / mean_after(st, c) * 100:+.2f}%" for c in full))
    rows = []
    for name, t in runs.items():
        shares = {c: _share(mean_after(st, c) - mean_after(t, c), full[c]) for c in full}
        with_static = t.assign(network_bytes_static=st["network_bytes"].to_numpy())
        s = summarize(with_static)
        traffic = TRAFFIC[strategy]
        row = Row(kind, strategy, name, shares[traffic] if traffic else None,
                  shares["remote_copies_per_token_layer"], shares["hops_per_token"],
                  shares[BALANCE], float(t["bytes_migrated"].sum()) / max(float(per.sum()), 1.0),
                  s.get("break_even_step"), _payback_steps(st, t, after), cpu[name])
        out(f"  {name:9s} copies {mean_after(t, 'remote_copies_per_token_layer'):.4f}"
            f" hops {mean_after(t, 'hops_per_token'):7.1f} max/mean {mean_after(t, BALANCE):.3f}"
            f" | kept: copies {_pct(row.copies)} hops {_pct(row.hops)}"
            f" balance {_pct(row.balance)} | bytes {t['bytes_migrated'].sum() / 1e9:.2f} GB"
            f" ({row.bytes_share * 100:.1f}%) | break-even step {row.break_even_step},"
            f" payback {_steps(row.payback_steps)}"
            f" | {row.cpu_s:.1f} s CPU" + (f" | {row.met()}" if name in ("budget", "price")
                                           else ""))
        rows.append(row)
    return rows


def _payback_steps(static: pd.DataFrame, t: pd.DataFrame, after: np.ndarray) -> float | None:
    """Steps of serving after the onset, at the run's mean saving per step against static,
    that one of its rebalances' weight bytes take to pay back (None: nothing moved or saved)."""
    steps = (t["step_stop"] - t["step_start"]).to_numpy()[after]
    saved = (static["network_bytes"] - t["network_bytes"]).to_numpy()[after]
    moves = int((t["bytes_migrated"] > 0).sum())
    if not moves or saved.sum() <= 0:
        return None
    return float(t["bytes_migrated"].sum()) / moves / (saved.sum() / steps.sum())


def _steps(v: float | None) -> str:
    return "never" if v is None else f"{v:,.0f} steps"


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{v * 100:.1f}%"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kind", choices=KINDS, action="append",
                    help="Run only these kinds of drift (repeatable; default: all).")
    ap.add_argument("--strategy", choices=tuple(TRAFFIC), action="append",
                    help="Run only these strategies (repeatable; default: all).")
    args = ap.parse_args()
    routes = build_route_table(build_fat_tree(4, 4))
    t0 = time.process_time()
    for kind, path, onset in iter_drifts(args.kind or KINDS):
        for strategy in args.strategy or tuple(TRAFFIC):
            measure(kind, path, onset, routes, strategy)
            sys.stdout.flush()
    print(f"total {time.process_time() - t0:.1f} s CPU")


def iter_drifts(kinds: Sequence[str]) -> Iterator[tuple[str, Path, int]]:
    """(kind, trace, onset) of each kind in a temporary directory; esft is skipped (and said
    so) when the data is absent."""
    with tempfile.TemporaryDirectory() as d:
        for kind in kinds:
            if kind == "esft" and not ESFT.is_dir():
                print(f"esft: skipped, {ESFT} is absent")
                continue
            yield (kind, *drift_trace(Path(d), kind))


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
