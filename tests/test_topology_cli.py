"""`moe-netsim topology ...` end to end, and the drawing functions (they return Figures)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from helpers import make_trace, tiny_model
from matplotlib.figure import Figure
from test_topology_cases import SMALL_CASES, build, case_id

from experiments.cli import main
from experiments.plot_topology import (
    link_load_per_link,
    plot_topology,
    topology_levels,
    topology_positions,
)
from simulator.cluster.families import BUILDERS
from simulator.cluster.io import load_cluster
from simulator.cluster.paths import build_route_table
from simulator.config import SimConfig
from simulator.engine import simulate
from traces.infra.errors import InputError


def test_list_and_show(capsys):
    assert main(["topology", "list"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in BUILDERS)
    assert main(["topology", "show", "leaf-spine"]) == 0
    out = capsys.readouterr().out
    assert "oversubscription" in out and "Server-facing : spine-facing" in out
    assert "gpus_per_server" in out
    assert main(["topology", "show", "torus"]) == 2
    assert "unknown topology family or preset 'torus'" in capsys.readouterr().err


@pytest.mark.parametrize("suffix", [".json", ".graphml"])
def test_build_info_and_refuse_overwrite(tmp_path, capsys, suffix):
    out = tmp_path / f"ft{suffix}"
    argv = ["topology", "build", "fat-tree", "--param", "k=4", "--param", "num_servers=6",
            "--param", "gpus_per_server=2", "--out", str(out)]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "12 GPUs, 6 servers" in text
    c = load_cluster(out)
    assert c.links == BUILDERS["fat-tree"](k=4, num_servers=6, gpus_per_server=2).links
    assert main(argv) == 2  # exists
    assert "--overwrite" in capsys.readouterr().err
    assert main([*argv, "--overwrite"]) == 0
    capsys.readouterr()
    assert main(["topology", "info", str(out)]) == 0
    # the distance histogram covers all 12 x 11 ordered GPU pairs
    info = capsys.readouterr().out
    hist = info.split("ordered pairs): ")[1].strip()
    assert sum(int(part.split(": ")[1]) for part in hist.split(", ")) == 12 * 11


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--param", "k"], "expected NAME=VALUE"),
        (["--param", "k=4", "--param", "k=6"], "given twice"),
        (["--param", "k=3"], "k must be an even number"),
        (["--param", "radix=4"], "unknown parameter"),
    ],
)
def test_build_bad_parameters_one_line_exit_2(tmp_path, capsys, argv, message):
    out = tmp_path / "c.json"
    assert main(["topology", "build", "fat-tree", *argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.strip().count("\n") == 0
    assert not out.exists()


def _links_frame(cluster, strategies=("a",)):
    """A links.parquet as `simulate` writes it: a small replay per strategy."""
    routes = build_route_table(cluster)
    model = tiny_model(layers=1, experts=4, top_k=2, hidden=64)
    rng = np.random.default_rng(0)
    g = cluster.num_gpus
    experts = np.stack([rng.choice(4, 2, replace=False) for _ in range(30)])[:, None, :]
    trace = make_trace(model, experts, origin=rng.integers(0, g, 30))
    frames = []
    for i, name in enumerate(strategies):
        layout = ((np.arange(4) + i) % g).reshape(1, 4, 1)
        sim = simulate([trace], routes, layout, SimConfig())
        frames.append(sim.links.assign(strategy=name))
    return pd.concat(frames, ignore_index=True)


def test_draw_with_and_without_link_load(tmp_path, capsys):
    cfile = tmp_path / "ls.json"
    assert main(["topology", "build", "leaf-spine", "--param", "num_servers=4",
                 "--param", "servers_per_leaf=2", "--param", "gpus_per_server=2",
                 "--out", str(cfile)]) == 0
    png = tmp_path / "ls.png"
    assert main(["topology", "draw", str(cfile), "--out", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    links = tmp_path / "links.parquet"
    _links_frame(load_cluster(cfile), ("rr", "ilp")).to_parquet(links)
    capsys.readouterr()
    loaded = tmp_path / "load.png"
    base = ["topology", "draw", str(cfile), "--out", str(loaded), "--link-load", str(links)]
    assert main(base) == 2  # two strategies, none chosen
    assert "choose one with --strategy" in capsys.readouterr().err
    assert main([*base, "--strategy", "ilp", "--metric", "utilisation"]) == 0
    assert loaded.exists()
    # a links table of another cluster is refused, naming the mismatch
    other = tmp_path / "other.parquet"
    _links_frame(BUILDERS["fat-tree"](k=2, gpus_per_server=2)).to_parquet(other)
    assert main(["topology", "draw", str(cfile), "--out", str(tmp_path / "x.png"),
                 "--link-load", str(other)]) == 2
    assert "another cluster" in capsys.readouterr().err
    assert main(["topology", "draw", str(cfile), "--out", str(tmp_path / "x.svg")]) == 2
    assert not (tmp_path / "x.png").exists() and not (tmp_path / "x.svg").exists()


def test_link_load_is_the_busier_direction():
    c = BUILDERS["leaf-spine"](num_servers=2, servers_per_leaf=1, num_spines=1,
                               gpus_per_server=1)
    frame = _links_frame(c)
    load = link_load_per_link(c, frame)
    by_link = frame.groupby("link")["bytes"].max()
    np.testing.assert_array_equal(load, by_link.reindex(range(len(c.links))).to_numpy())
    with pytest.raises(InputError, match="lacks column"):
        link_load_per_link(c, frame.drop(columns=["src"]))
    with pytest.raises(InputError, match="no strategy 'zz'"):
        link_load_per_link(c, frame, strategy="zz")


@pytest.mark.parametrize("case", SMALL_CASES[::3], ids=case_id)
def test_plot_returns_a_figure_and_lays_tiers_out(case):
    c = build(case)
    level = topology_levels(c)
    pos = topology_positions(c)
    by = {n.name: n for n in c.nodes}
    assert all(level[g] == 0 for g in c.gpus) and all(level[s] == 1 for s in c.servers)
    assert all(level[n.name] >= 2 for n in c.nodes if n.kind == "switch")
    # a GPU sits under its server
    for g in c.gpus:
        assert abs(pos[g][0] - pos[by[g].server][0]) < 0.5
    assert isinstance(plot_topology(c), Figure)
    load = np.arange(len(c.links), dtype=float)
    assert isinstance(plot_topology(c, load, "bytes"), Figure)
    with pytest.raises(InputError, match="values"):
        plot_topology(c, load[:-1])


def test_bench_prints_a_row_per_case(monkeypatch, capsys):
    from experiments.commands import topology

    monkeypatch.setattr(
        topology, "BENCH_CASES", [("leaf-spine", {"num_servers": 3, "gpus_per_server": 2})]
    )
    assert main(["topology", "bench"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    # 3 servers x 2 GPUs; links: 6 NVLink + 3 access + 1 leaf x 4 default spines = 13
    assert len(lines) == 2 and lines[1].split()[:3] == ["leaf-spine", "6", "13"]
