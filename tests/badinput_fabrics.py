"""Bad-input cases of the fabrics: presets, the nvl72 family, matrix imports."""

from __future__ import annotations

from badinput import cli_case

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
