"""Study files: grid expansion, and bad files rejected before any work with the key named."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from experiments.studies import build_study, load_study_file
from experiments.studies.merge import add_reductions
from experiments.studies.sections import split_sim_options
from tests.helpers import make_trace, tiny_model
from traces.infra.errors import InputError

TINY = """
seed = 0
[study]
name = "tiny"
[model]
name = "tiny-moe"
moe_layer_indices = [1, 2]
num_routed_experts = 8
num_shared_experts = 0
top_k = 2
hidden_size = 64
[topology]
family = "fat-tree"
params = { k = 4, num_servers = 3 }
links = { gpus_per_server = 2 }
[trace]
fit_tokens = 64
replay_tokens = 64
[axes]
"strategy.name" = ["round-robin", "ilp-load"]
"seed" = [0, 1, 2]
"""


def write(tmp_path, text, name="study.toml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_grid_is_the_factorial_product_in_file_order(tmp_path):
    study = load_study_file(write(tmp_path, TINY))
    assert study.axes == ("strategy.name", "seed")
    # 2 strategies x 3 seeds = 6 cells, the last axis varies fastest
    got = [tuple(v for _, v in c.axis_values) for c in study.cells]
    assert got == [("round-robin", 0), ("round-robin", 1), ("round-robin", 2),
                   ("ilp-load", 0), ("ilp-load", 1), ("ilp-load", 2)]
    assert [c.config["seed"] for c in study.cells] == [0, 1, 2, 0, 1, 2]
    assert len({c.cell_id for c in study.cells}) == 6
    # ids depend only on the content: the same file gives the same ids
    again = load_study_file(write(tmp_path, TINY, "copy.toml"))
    assert [c.cell_id for c in again.cells] == [c.cell_id for c in study.cells]


def test_linked_axes_vary_together(tmp_path):
    text = TINY.replace('"seed" = [0, 1, 2]',
                        '"topology.params.num_servers, trace.replay_tokens" = [[3, 32], [5, 64]]')
    study = load_study_file(write(tmp_path, text))
    assert len(study.cells) == 4
    pairs = {(c.config["topology"]["params"]["num_servers"], c.config["trace"]["replay_tokens"])
             for c in study.cells}
    assert pairs == {(3, 32), (5, 64)}


BAD = [
    # (replace this, with that, a part of the message that names the key)
    ('[study]\nname = "tiny"', '[study]\nname = "tiny"\ncolour = "red"', "study.colour"),
    ("seed = 0", "seed = 0\nmodle = 1", "modle"),
    ('[trace]', '[strategy]\noptoins = {}\n[trace]', "strategy.optoins"),
    ("k = 4, num_servers = 3", 'k = "four", num_servers = 3',
     "topology.params: fat-tree: parameter k"),
    ("k = 4, num_servers = 3", "k = 4, num_servers = 3, radix = 8", "radix"),
    ("gpus_per_server = 2", "gpus_per_server = 2.5", "topology.links.gpus_per_server"),
    ("fit_tokens = 64", "fit_tokens = 0", "trace.fit_tokens"),
    ("fit_tokens = 64", 'fit_tokens = "64"', "trace.fit_tokens"),
    ('"seed" = [0, 1, 2]', '"seed" = []', "'seed'"),
    ('"seed" = [0, 1, 2]', '"seed" = 3', "'seed'"),
    ('"seed" = [0, 1, 2]', '"seed" = [0, 0]', "duplicate"),
    ('"seed" = [0, 1, 2]', '"colour" = [1]', "'colour'"),
    ('"seed" = [0, 1, 2]', '"topology.params.num_servers" = [3, 17]', "num_servers=17"),
    ('"seed" = [0, 1, 2]', '"topology.family" = ["fat-tree", "torus"]', "topology.family"),
    ('"seed" = [0, 1, 2]', '"sim.inflight_microbatches" = [2, 0]', "inflight_microbatches"),
    ('"seed" = [0, 1, 2]', '"sim.warp_drive" = [true]', "sim.warp_drive"),
    ('"round-robin", "ilp-load"', '"round-robin", "clairvoyant"', "strategy.name"),
    ('"seed" = [0, 1, 2]', '"model.top_k" = [2, 9]', "top_k"),
    ('"seed" = [0, 1, 2]', '"strategy.options.time_limit_s" = [-1.0]', "time_limit_s"),
    ('"seed" = [0, 1, 2]', '"seed, trace.seq_len" = [[0]]', "linked axis"),
    ("[trace]", '[trace]\nsource = "missing.parquet"', "trace.source"),
    ("[trace]", '[trace]\nfit_source = "missing.json"', "trace.fit_source"),
    ("[trace]", '[trace]\nsource = "stats.json"', "load statistics"),
]


@pytest.mark.parametrize(("old", "new", "named"), BAD)
def test_bad_study_file_names_the_key(tmp_path, old, new, named):
    assert old in TINY
    with pytest.raises(InputError) as e:
        load_study_file(write(tmp_path, TINY.replace(old, new)))
    assert named in str(e.value)
    assert "\n" not in str(e.value)


def test_not_toml_missing_and_wrong_top_level(tmp_path):
    with pytest.raises(InputError, match="not valid TOML"):
        load_study_file(write(tmp_path, "seed = = 1"))
    with pytest.raises(InputError, match="not found"):
        load_study_file(tmp_path / "nope.toml")
    with pytest.raises(InputError, match="topology: expected a table"):
        build_study({"topology": 3})


def test_cli_rejects_a_bad_file_before_any_work(tmp_path):
    bad = write(tmp_path, TINY.replace('"seed" = [0, 1, 2]', '"seed" = []'))
    out = tmp_path / "run"
    r = subprocess.run(
        [sys.executable, "-m", "experiments", "sweep", str(bad), "--out", str(out)],
        capture_output=True, text=True, timeout=120,
    )
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "Traceback" not in r.stderr
    assert "'seed'" in r.stderr and "empty axis" in r.stderr
    assert not out.exists()


def test_reductions_against_the_baseline_of_the_same_setup():
    # two setups (seed 0, 1) x two strategies; hops 100 -> 80 is 20 %, 50 -> 45 is 10 %
    df = pd.DataFrame({
        "seed": [0, 1, 0, 1],
        "strategy.name": ["round-robin", "round-robin", "ilp-load", "ilp-load"],
        "strategy": ["round-robin", "round-robin", "ilp-load", "ilp-load"],
        "hops_per_token": [100.0, 50.0, 80.0, 45.0],
    })
    for m in ("network_link_bytes", "max_link_utilisation", "latency_p50_ms", "latency_p99_ms",
              "makespan_ms"):
        df[m] = 1.0
    out = add_reductions(df, ("strategy.name", "seed"), "round-robin")
    np.testing.assert_allclose(out["hops_per_token_reduction_pct"], [0.0, 0.0, 20.0, 10.0])
    none = add_reductions(df, ("strategy.name", "seed"), "greedy")
    assert none["hops_per_token_reduction_pct"].isna().all()


def test_sim_microbatch_tokens_cut_the_replay():
    from simulator.microbatches import microbatches

    model = tiny_model(layers=1, experts=2, top_k=1)
    trace = make_trace(model, np.zeros((5, 1, 1)))
    n = split_sim_options({"microbatch_tokens": 2}).microbatch_tokens
    # 5 tokens in micro-batches of 2: 2 + 2 + 1
    assert [b.num_tokens for b in microbatches([trace], n)] == [2, 2, 1]
    assert split_sim_options({}).microbatch_tokens is None  # the trace's own steps


@pytest.mark.parametrize("name", ["sweep-tiny.toml", "sweep-whatif.toml"])
def test_example_study_files_are_valid(name):
    from pathlib import Path

    study = load_study_file(Path(__file__).resolve().parents[1] / "examples" / name)
    assert len(study.cells) >= 8
