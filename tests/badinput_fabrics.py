"""Bad-input cases of the fabrics: presets, the nvl72 family, matrix imports."""

from __future__ import annotations

from pathlib import Path

from badinput import Thunk, case, cli_case

from simulator.cluster.matrix import read_matrices

cli_case("simulate: unknown --preset",
         ["simulate", "--trace", "{dir}/trace.parquet", "--preset", "deepseek-ep999",
          "--layout", "{dir}/layout.csv", "--out", "{dir}/run"],
         "--preset: unknown preset 'deepseek-ep999'", "deepseek-decode-ep144",
         must_not_exist=("run",))
cli_case("topology build: --param on a preset",
         ["topology", "build", "nvl72-rack", "--param", "num_racks=2", "--out",
          "{dir}/c.json"], "preset nvl72-rack has fixed numbers", must_not_exist=("c.json",))
cli_case("topology build: nvl72 with an unknown scale-out fabric",
         ["topology", "build", "nvl72", "--param", "scale_out=torus", "--out", "{dir}/c.json"],
         "nvl72: unknown scale_out 'torus'", must_not_exist=("c.json",))
cli_case("topology build: nvl72 racks that are not whole trays",
         ["topology", "build", "nvl72", "--param", "gpus_per_tray=5", "--out", "{dir}/c.json"],
         "gpus_per_rack 72 is not a whole number of trays", must_not_exist=("c.json",))


_BAD_MATRICES = {
    "not square": ('{"rank_cost_matrix": [[0, 1, 2], [1, 0, 2]]}', "must be square"),
    "not symmetric": ('{"rank_cost_matrix": [[0, 1], [2, 0]]}', "is not symmetric"),
    "negative cost": ('{"rank_cost_matrix": [[0, -1], [-1, 0]]}', "is negative"),
    "cost diagonal not zero": ('{"rank_cost_matrix": [[1, 1], [1, 0]]}', "diagonal must be 0"),
    "zero bandwidth": ('{"rank_bandwidth_bytes_per_s": [[0, 0], [0, 0]]}', "must be > 0"),
    "negative bandwidth": ('{"rank_bandwidth_bytes_per_s": [[0, -5], [-5, 0]]}', "must be > 0"),
}


def _register_matrix(name: str, text: str, expect: str) -> None:
    @case("matrix file", name, "m.json", expect)
    def _(d: Path) -> Thunk:
        (d / "m.json").write_text(text)
        return lambda: read_matrices(d / "m.json")


for _name, (_text, _expect) in _BAD_MATRICES.items():
    _register_matrix(_name, _text, _expect)

cli_case("topology import: a matrix that is not symmetric",
         ["topology", "import", "--matrix", "{dir}/asym.json", "--out", "{dir}/m_out.json"],
         "asym.json: rank_cost_matrix is not symmetric", must_not_exist=("m_out.json",))
