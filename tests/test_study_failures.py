"""One failing cell never stops a study: it is recorded with its reason, the rest runs, the
command exits 3, and a re-run retries it."""

from __future__ import annotations

import json

import pandas as pd

from experiments.cli import main
from experiments.commands.study import EXIT_CELLS_FAILED
from experiments.studies.runner import FAILED_MARKER, failed_cells

# ilp-load with balance_eps 1e-6 asks every GPU's expected load to be within 1 + 1e-6 of the
# mean: with 8 experts of skewed (Zipf 1.5) load on 4 GPUs of 2 slots per layer no layout
# does that, and HiGHS proves the model infeasible (no time limit involved).  Round-robin
# needs no solver.  The second axis value makes the study run two cells per strategy.
STUDY = """
seed = 0
[model]
name = "tiny-moe"
moe_layer_indices = [1, 2]
num_routed_experts = 8
num_shared_experts = 1
top_k = 2
hidden_size = 64
[topology]
family = "fat-tree"
params = { k = 4, num_servers = 2 }
links = { gpus_per_server = 2 }
[trace]
fit_tokens = 64
replay_tokens = 64
zipf_exponent = 1.5
[axes]
"strategy" = [{name = "round-robin"}, {name = "ilp-load", balance_eps = 1e-6}]
"""


def test_a_failing_cell_is_recorded_and_the_others_run(tmp_path, capsys) -> None:
    study = tmp_path / "s.toml"
    study.write_text(STUDY)
    out = tmp_path / "run"
    assert main(["sweep", str(study), "--serial", "--out", str(out)]) == EXIT_CELLS_FAILED
    captured = capsys.readouterr()
    assert "moe-netsim: 1 of 2 cells failed" in captured.err
    res = pd.read_parquet(out / "results.parquet")
    ok, bad = res.iloc[0], res.iloc[1]
    assert ok["strategy"] == "round-robin" and ok["status"] == "heuristic"
    assert ok["hops_per_token"] > 0 and pd.isna(ok["failure"])
    # the failed row keeps its setup columns, has no numbers and says why in one line
    assert bad["strategy"] == "ilp-load" and bad["status"] == "failed"
    assert bad["num_gpus"] == 4 and bad["model"] == "tiny-moe"
    assert pd.isna(bad["hops_per_token"]) and pd.isna(bad["hops_per_token_reduction_pct"])
    assert bad["failure"].startswith("placement ilp-load failed: infeasible")
    assert "\n" not in bad["failure"]
    assert failed_cells(out) == {bad["cell"]}
    assert (out / "cells" / bad["cell"] / FAILED_MARKER).read_text().strip() == bad["failure"]
    meta = json.loads((out / "meta.json").read_text())
    assert meta["cells_failed"] == [bad["cell"]]
    page = (out / "report.html").read_text()
    assert "Failed cells" in page and "placement ilp-load failed: infeasible" in page
    # a re-run keeps the finished cell and retries the failed one (it fails again)
    assert main(["sweep", str(study), "--serial", "--no-report", "--out", str(out)]
                ) == EXIT_CELLS_FAILED
    assert "resumed: 1 cells were already finished, ran 1" in capsys.readouterr().err
