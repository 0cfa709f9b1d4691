"""Sizes before work: byte counts that an int64 cannot hold and allocations or files that
cannot fit this machine are refused in one line with the estimate (exit 2), before anything is
allocated or written (traces/infra/limits.py)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from badinput import TINY, prepare_cli_dir, tiny_trace
from test_input_protection import _run, _snapshot

from simulator.cluster.families import BUILDERS
from simulator.traffic_config import TrafficConfig
from traces.infra import limits
from traces.infra.errors import InputError
from traces.infra.limits import INT64_MAX, check_memory, exact_int64, human_bytes
from traces.io import write_trace


def test_human_bytes_and_the_int64_edge() -> None:
    assert [human_bytes(n) for n in (0, 1023, 1536, 3 * 2**30, 14 * 2**40)] == [
        "0 B", "1023 B", "1.5 KiB", "3.0 GiB", "14.0 TiB"]
    assert exact_int64(INT64_MAX, "x", "") == INT64_MAX
    with pytest.raises(InputError, match="beyond the 2\\^63-1"):
        exact_int64(INT64_MAX + 1, "x", "")


def test_memory_refusals_compare_with_the_memory_available(monkeypatch) -> None:
    assert 0 < limits.available_memory_bytes() <= INT64_MAX
    monkeypatch.setattr(limits, "available_memory_bytes", lambda: 3 * 2**30)
    check_memory(3 * 2**30, "all of it", "")  # exactly what is available: not refused
    with pytest.raises(InputError, match=r"^one byte more needs at least 3\.0 GiB of memory,"
                       r" more than the 3\.0 GiB available; fix$"):
        check_memory(3 * 2**30 + 1, "one byte more", "fix")


def test_the_replay_byte_bound_is_the_exact_product() -> None:
    # 6 tokens x 2 MoE layers x top-2 x (16 x 1 + 16 x 2 bytes) x 4 links = 4,608 bytes
    assert TrafficConfig().bytes_bound(TINY, tokens=6, max_links=4) == 6 * 2 * 2 * 48 * 4 == 4608
    huge = replace(TINY, hidden_size=2**60)  # Python ints: no wrap-around, however large
    assert TrafficConfig().bytes_bound(huge, 6, 4) == 6 * 2 * 2 * 3 * 2**60 * 4 > INT64_MAX


def test_simulate_refuses_byte_counts_an_int64_cannot_hold(tmp_path: Path) -> None:
    prepare_cli_dir(tmp_path)
    huge = replace(tiny_trace(), meta=replace(tiny_trace().meta,
                                              model=replace(TINY, hidden_size=2**60)))
    write_trace(tmp_path / "huge.parquet", huge)
    before = _snapshot(tmp_path)
    for mode in ("analytic", "des"):
        code, err = _run(["simulate", "--mode", mode, "--trace", f"{tmp_path}/huge.parquet",
                          "--topology", f"{tmp_path}/cluster.json", "--layout",
                          f"{tmp_path}/layout.csv", "--out", f"{tmp_path}/run"])
        assert code == 2 and err.count("\n") == 1 and "2^63-1" in err, err
        assert "--hidden-size" in err  # how to fix it
        assert _snapshot(tmp_path) == before


# every command that counts bytes: the replays, the studies and sweeps that place and replay,
# rebalance, and place (its bytes per token); trace stats counts routes, not bytes
BYTE_COUNTERS = ["simulate", "sweep", "study paper", "study failures", "rebalance", "place"]


@pytest.mark.parametrize("name", BYTE_COUNTERS)
def test_every_byte_counting_command_refuses_what_an_int64_cannot_hold(name, tmp_path: Path):
    from test_input_protection import COMMANDS, _prepare

    _prepare(tmp_path)
    t = tiny_trace()  # 2^60 elements per hidden state: one route alone is 3 x 2^60 bytes
    write_trace(tmp_path / "trace.parquet",
                replace(t, meta=replace(t.meta, model=replace(TINY, hidden_size=2**60))))
    before = _snapshot(tmp_path)
    command = next(c for c in COMMANDS if c.name == name)
    argv = [a.replace("{d}", str(tmp_path)) for a in command.argv]
    code, err = _run(argv + ["--out", f"{tmp_path}/{command.out_names[0]}"])
    assert code == 2 and err.count("\n") == 1 and "2^63-1" in err, err
    assert _snapshot(tmp_path) == before


def test_rebalance_refuses_migrated_weights_an_int64_cannot_hold(tmp_path: Path) -> None:
    from test_input_protection import COMMANDS, _prepare

    _prepare(tmp_path)
    t = tiny_trace()  # one expert: 3 x 16 x 2^58 x 1 byte = 1.4e19 > 2^63-1 weight bytes
    write_trace(tmp_path / "trace.parquet", replace(t, meta=replace(t.meta, model=replace(
        TINY, moe_intermediate_size=2**58))))
    command = next(c for c in COMMANDS if c.name == "rebalance")
    argv = [a.replace("{d}", str(tmp_path)) for a in command.argv]
    code, err = _run(argv + ["--weight-bytes-per-param", "1", "--out", f"{tmp_path}/rb"])
    assert code == 2 and "moving all 16 expert copies" in err and "2^63-1" in err, err
    assert not (tmp_path / "rb").exists()


@pytest.mark.parametrize(("argv", "what"), [
    (["topology", "build", "fat-tree", "--param", "k=100000"], "memory"),
    (["topology", "build", "leaf-spine", "--param", "num_servers=1000000000000"], "memory"),
    (["topology", "build", "dragonfly", "--param", "routers_per_group=100000",
      "--param", "global_links_per_router=100000"], "memory"),
    # 2^40 tokens x 58 MoE layers x top-8, at least a byte each: 464 TiB
    (["trace", "synth", "--model", "deepseek-r1", "--tokens", str(2**40)], "disk"),
    # 2^30 tokens per chunk x 58 x 8 bytes, three chunks in flight: 1.4 TiB
    (["trace", "synth", "--model", "deepseek-r1", "--tokens", "10",
      "--chunk-tokens", str(2**30)], "memory"),
], ids=["fat-tree k", "leaf-spine servers", "dragonfly", "synth tokens", "synth chunk"])
def test_sizes_that_cannot_fit_are_refused_with_the_estimate(argv, what, tmp_path: Path):
    prepare_cli_dir(tmp_path)
    before = _snapshot(tmp_path)
    out = tmp_path / ("o.json" if argv[0] == "topology" else "o.parquet")
    code, err = _run([a.replace("{d}", str(tmp_path)) for a in argv] + ["--out", str(out)])
    assert code == 2 and err.count("\n") == 1, err
    assert "needs at least" in err and f"of {what}" in err, err
    assert _snapshot(tmp_path) == before


def test_every_family_estimates_its_size_before_building() -> None:
    for name, family in BUILDERS.items():
        small = family.size_bytes({})
        assert 0 < small < 10 * 2**20, name  # the default shapes: kilobytes
