"""A layout remembers the cluster it was made for; replaying it on another warns in one line.

``place`` records the cluster's fingerprint in the layout's .meta.json; ``simulate`` and
``trace stats --layout`` compare it (or, without a record, the table's server column) with the
cluster they are given.
"""

from __future__ import annotations

import json
from pathlib import Path

from badinput import _cluster_dict, prepare_cli_dir
from test_input_protection import _run

from simulator.cluster.io import cluster_fingerprint, cluster_from_dict, load_cluster, save_cluster


def _variant(d: Path, name: str, change) -> Path:  # type: ignore[no-untyped-def]
    c = _cluster_dict()
    change(c)
    path = d / name
    path.write_text(json.dumps(c))
    return path


def test_fingerprint_is_the_fabric_not_the_file(tmp_path: Path) -> None:
    base = cluster_from_dict(_cluster_dict())
    save_cluster(base, tmp_path / "c.graphml")
    renamed = _cluster_dict() | {"name": "other", "description": "the same fabric"}
    assert cluster_fingerprint(load_cluster(tmp_path / "c.graphml")) == cluster_fingerprint(base)
    assert cluster_fingerprint(cluster_from_dict(renamed)) == cluster_fingerprint(base)
    slower = _cluster_dict()
    slower["links"][0]["bandwidth_bytes_per_s"] = 2.5e10
    assert cluster_fingerprint(cluster_from_dict(slower)) != cluster_fingerprint(base)
    swapped = _cluster_dict()  # the same switches and servers, GPUs in another order
    swapped["nodes"][2], swapped["nodes"][3] = swapped["nodes"][3], swapped["nodes"][2]
    assert cluster_fingerprint(cluster_from_dict(swapped)) != cluster_fingerprint(base)


def _place(d: Path, cluster: Path, out: Path) -> None:
    code, err = _run(["place", "--topology", str(cluster), "--fit", str(d / "trace.parquet"),
                      "--strategy", "round-robin", "--origins", "dp", "--out", str(out)])
    assert (code, err) == (0, ""), err


def _simulate(d: Path, cluster: Path, layout: Path, out: str) -> tuple[int, str]:
    return _run(["simulate", "--mode", "analytic", "--trace", str(d / "trace.parquet"),
                 "--topology", str(cluster), "--layout", str(layout), "--origins", "dp",
                 "--no-report", "--out", str(d / out)])


def test_simulate_warns_when_the_layout_was_made_for_another_cluster(tmp_path: Path) -> None:
    prepare_cli_dir(tmp_path)
    _place(tmp_path, tmp_path / "cluster.json", tmp_path / "l.parquet")
    meta = json.loads((tmp_path / "l.parquet.meta.json").read_text())
    here = cluster_fingerprint(load_cluster(tmp_path / "cluster.json"))
    assert meta["cluster_fingerprint"] == here and meta["num_gpus"] == 4
    assert _simulate(tmp_path, tmp_path / "cluster.json", tmp_path / "l.parquet", "a") == (0, "")

    def slower(c):  # type: ignore[no-untyped-def]
        c["links"][0]["bandwidth_bytes_per_s"] = 2.5e10

    other = _variant(tmp_path, "slow.json", slower)
    code, err = _simulate(tmp_path, other, tmp_path / "l.parquet", "b")
    assert code == 0 and err.count("\n") == 1, err
    assert err.startswith("warning: layout ") and str(tmp_path / "l.parquet") in err
    assert here in err and cluster_fingerprint(load_cluster(other)) in err
    assert (tmp_path / "b" / "summary.parquet").is_file()  # replayed as given


def test_a_table_without_a_record_is_checked_by_its_server_column(tmp_path: Path) -> None:
    prepare_cli_dir(tmp_path)
    _place(tmp_path, tmp_path / "cluster.json", tmp_path / "l.csv")
    (tmp_path / "l.csv.meta.json").unlink()

    def one_server_per_gpu_pair_swapped(c):  # type: ignore[no-untyped-def]
        # GPU s0.g1 now sits in server s1 and s1.g0 in s0: same GPU count, other servers
        c["nodes"][3]["server"], c["nodes"][5]["server"] = "s1", "s0"
        c["links"][2]["b"], c["links"][4]["b"] = "s1", "s0"

    other = _variant(tmp_path, "moved.json", one_server_per_gpu_pair_swapped)
    assert _simulate(tmp_path, tmp_path / "cluster.json", tmp_path / "l.csv", "a") == (0, "")
    code, err = _simulate(tmp_path, other, tmp_path / "l.csv", "b")
    assert code == 0 and err.count("\n") == 1 and "server column" in err, err


def test_trace_stats_warns_too(tmp_path: Path) -> None:
    prepare_cli_dir(tmp_path)
    _place(tmp_path, tmp_path / "cluster.json", tmp_path / "l.parquet")

    def slower(c):  # type: ignore[no-untyped-def]
        c["links"][0]["latency_s"] = 1e-3

    other = _variant(tmp_path, "slow.json", slower)
    code, err = _run(["trace", "stats", str(tmp_path / "trace.parquet"), "--layout",
                      str(tmp_path / "l.parquet"), "--topology", str(other),
                      "--out", str(tmp_path / "st")])
    assert code == 0 and err.startswith("warning: layout "), err
