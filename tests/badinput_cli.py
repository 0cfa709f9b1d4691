"""Bad-input cases: GraphML cluster files, study files and the command line.

Registered into ``badinput.CASES`` on import (``tests/badinput.py`` imports every case module
in catalogue order).
"""

import re
from collections.abc import Callable
from pathlib import Path

from badinput import (
    CASES,
    Case,
    Thunk,
    _cluster_dict,
    case,
    cli_case,
)

from experiments.studies.spec import load_study_file
from simulator.cluster.io import cluster_from_dict, cluster_to_graphml, load_cluster

# ---------------------------------------------------------------------------------------------
# GraphML cluster files: simulator.cluster.io.load_cluster (.graphml)

GRAPHML = "cluster GraphML"


def _graphml_text() -> str:
    return cluster_to_graphml(cluster_from_dict(_cluster_dict()))


def _register_graphml(name: str, edit: Callable[[str], str], *expect: str) -> None:
    def setup(d: Path) -> Thunk:
        p = d / "cluster.graphml"
        text = _graphml_text()
        new = edit(text)
        assert new != text, name
        p.write_text(new)
        return lambda: load_cluster(p)

    CASES.append(Case(GRAPHML, name, ("cluster.graphml", *expect), setup))


def _sub(old: str, new: str, count: int = 1) -> Callable[[str], str]:
    return lambda t: t.replace(old, new, count)


_register_graphml("not XML", lambda t: t[: len(t) // 2], "not valid GraphML XML")
_register_graphml("root is not <graphml>", lambda t: t.replace("<graphml", "<grafml").replace(
    "</graphml>", "</grafml>"), "root element is <grafml>")
_register_graphml("no <graph>", lambda t: re.sub(r"<graph .*</graph>", "", t, flags=re.S),
                  "expected one <graph> element, found 0")
_register_graphml("data with an undeclared key", _sub('key="', 'key="zz'), "has no declared <key>")
_register_graphml("unknown node attribute", lambda t: re.sub(
    r'attr\.name="kind"', 'attr.name="colour"', t, count=1), "unknown node attribute 'colour'")
_register_graphml("node without an id", lambda t: re.sub(r'<node id="[^"]*"', "<node", t,
                                                         count=1), "node #0 has no id")
_register_graphml("bandwidth not a number", lambda t: re.sub(
    r'(<data key="[^"]*">)(4e\+11|[0-9.e+]+)(</data>)', r"\g<1>fast\3", t, count=1),
    "must be float", "'fast'")
_register_graphml("edge to an unknown node", lambda t: re.sub(r'target="[^"]*"', 'target="x9"',
                                                              t, count=1), "unknown node 'x9'")
_register_graphml("negative bandwidth", lambda t: re.sub(
    r'(<data key="[^"]*">)(4e\+11|[0-9][0-9.e+]+)(</data>)', r"\g<1>-1\3", t, count=1),
    "must be a finite number > 0")


@case(GRAPHML, "empty file", "cluster.graphml", "not valid GraphML XML")
def _(d: Path) -> Thunk:
    (d / "cluster.graphml").write_text("")
    return lambda: load_cluster(d / "cluster.graphml")


@case(GRAPHML, "unknown file type", "cluster.xml", "unknown topology file type")
def _(d: Path) -> Thunk:
    (d / "cluster.xml").write_text(_graphml_text())
    return lambda: load_cluster(d / "cluster.xml")


# ---------------------------------------------------------------------------------------------
# Study files (TOML): experiments.studies.spec.load_study_file

STUDY = "study file (TOML)"
STUDY_TOML = """seed = 0
study = { name = "tiny" }
model = { name = "tiny-moe", moe_layer_indices = [1, 2], num_routed_experts = 8, \
num_shared_experts = 0, top_k = 2, hidden_size = 64 }
topology = { family = "fat-tree", params = { k = 4, num_servers = 3 } }
trace = { fit_tokens = 64, replay_tokens = 64 }
[axes]
"strategy.name" = ["round-robin", "ilp-load"]
"""


def _register_study(name: str, old: str, new: str, *expect: str) -> None:
    def setup(d: Path) -> Thunk:
        assert old in STUDY_TOML, name
        (d / "study.toml").write_text(STUDY_TOML.replace(old, new, 1))
        return lambda: load_study_file(d / "study.toml")

    CASES.append(Case(STUDY, name, ("study.toml", *expect), setup))


@case(STUDY, "missing file", "nope.toml", "study file not found")
def _(d: Path) -> Thunk:
    return lambda: load_study_file(d / "nope.toml")


_register_study("not TOML", "[axes]", "[axes", "not valid TOML")
_register_study("not TOML (unclosed inline table)", "replay_tokens = 64 }", "replay_tokens = 64",
                "not valid TOML")
_register_study("unknown top-level key", "seed = 0", "seed = 0\nmodle = 1", "modle: unknown key")
_register_study("unknown key with a line break", "seed = 0", 'seed = 0\n"a\\nb" = 1',
                "'a\\nb': unknown key")
_register_study("unknown key in a table", 'name = "tiny"', 'name = "tiny", colour = 1',
                "study.colour")
_register_study("wrong type", "fit_tokens = 64", 'fit_tokens = "64"', "trace.fit_tokens")
_register_study("section given as a number", "seed = 0", "seed = 0\nsim = 3",
                "sim: expected a table, got")
_register_study("empty axis", '"strategy.name" = ["round-robin", "ilp-load"]', '"seed" = []',
                "empty axis")
_register_study("axis not a list", '"strategy.name" = ["round-robin", "ilp-load"]', '"seed" = 3',
                "expected a list of values")
_register_study("duplicate axis value", '"round-robin", "ilp-load"', '"round-robin", "round-robin"',
                "duplicate value")
_register_study("impossible combination (top_k > experts)",
                '"strategy.name" = ["round-robin", "ilp-load"]', '"model.top_k" = [2, 9]', "top_k")
_register_study("impossible combination (servers beyond the fat-tree)",
                '"strategy.name" = ["round-robin", "ilp-load"]',
                '"topology.params.num_servers" = [3, 17]', "num_servers=17")
_register_study("unknown strategy", '"round-robin", "ilp-load"', '"round-robin", "clairvoyant"',
                "strategy.name")
_register_study("axis path outside the study", '"strategy.name"', '"colour"', "'colour' must start")
_register_study("baseline names no strategy of the study", 'name = "tiny"',
                'name = "tiny", baseline = "greedy"', "study.baseline",
                "'greedy' names no strategy")
_register_study("replicas for a strategy that places none", "trace = {",
                'strategy = { replicas = 2 }\ntrace = {', "strategy.replicas",
                "round-robin does not support")
_register_study("empty file", STUDY_TOML, "", "the study file is empty")
_register_study("old [placer] section", "trace = {", 'placer = { name = "ilp" }\ntrace = {',
                "placer was renamed strategy")
_register_study("old placer.name axis", '"strategy.name"', '"placer.name"',
                "placer was renamed strategy")
_register_study("unknown sim.mode", "seed = 0", 'seed = 0\nsim = { mode = "fluid" }',
                "unknown mode 'fluid'", "des, flow")
_register_study("flow option without flow mode", "seed = 0",
                "seed = 0\nsim = { flow_tolerance = 0.1 }",
                "flow_tolerance applies to mode flow only, not 'des'")


@case(STUDY, "not UTF-8", "study.toml", "not a text file")
def _(d: Path) -> Thunk:
    (d / "study.toml").write_bytes(b"\xff\xfe seed = 0")
    return lambda: load_study_file(d / "study.toml")


# ---------------------------------------------------------------------------------------------
# Command line (moe-netsim ...): exit code 2, one line on stderr, nothing written

cli_case("demo --tokens 0", ["demo", "--out", "{dir}/run", "--tokens", "0"], "--tokens",
         subprocess=True, must_not_exist=("run",))
cli_case("demo --tokens -5", ["demo", "--out", "{dir}/run", "--tokens", "-5"], "--tokens",
         must_not_exist=("run",))
cli_case("demo --tokens not a number", ["demo", "--out", "{dir}/run", "--tokens", "x"],
         "--tokens", "expected an integer", must_not_exist=("run",))
cli_case("demo --seed -1", ["demo", "--out", "{dir}/run", "--seed", "-1"], "--seed", ">= 0",
         must_not_exist=("run",))
cli_case("demo --out exists, no --overwrite", ["demo", "--out", "{dir}/existing"],
         "existing", "--overwrite", subprocess=True)
cli_case("demo --out is a file", ["demo", "--out", "{dir}/afile", "--overwrite"],
         "afile", "is not a finished")
cli_case("demo --out inside a file", ["demo", "--out", "{dir}/afile/run"],
         "afile/run: cannot create", "afile is a file")
cli_case("unknown subcommand", ["frobnicate"], "invalid choice: 'frobnicate'", "--help",
         subprocess=True)
cli_case("no subcommand", [], "required: COMMAND", "--help")


# trace import / place / simulate: valid inputs from prepare_cli_dir, one thing wrong each
_IMP = ["trace", "import", "--out", "{dir}/t.parquet"]
cli_case("trace import: input folder missing", [*_IMP, "--format", "esft", "{dir}/nope"],
         "nope: ESFT input must be a folder", must_not_exist=("t.parquet",))
cli_case("trace import: vllm without --model", [*_IMP, "--format", "vllm", "{dir}/req.npy"],
         "does not say which model", "--model", subprocess=True, must_not_exist=("t.parquet",))
cli_case("trace import: unknown --model preset",
         [*_IMP, "--format", "vllm", "{dir}/req.npy", "--model", "gpt-5"],
         "unknown model preset 'gpt-5'", must_not_exist=("t.parquet",))
cli_case("trace import: unknown --format", [*_IMP, "--format", "csv", "{dir}/req.npy"],
         "invalid choice: 'csv'", must_not_exist=("t.parquet",))
cli_case("trace import: bad array (nothing written)",
         [*_IMP, "--format", "vllm", "{dir}/bad.npy", "--model", "{dir}/tiny.json"],
         "bad.npy: dtype float32", must_not_exist=("t.parquet",))
cli_case("trace import: --out not .parquet",
         ["trace", "import", "--out", "{dir}/t.csv", "--format", "vllm", "{dir}/req.npy",
          "--model", "{dir}/tiny.json"], "t.csv: the output must be a .parquet file",
         must_not_exist=("t.csv",))
cli_case("trace import: --out exists",
         ["trace", "import", "--out", "{dir}/trace.parquet", "--format", "vllm",
          "{dir}/req.npy", "--model", "{dir}/tiny.json"], "trace.parquet: exists",
         "--overwrite")
_PLACE = ["place", "--fat-tree", "4", "2", "--out", "{dir}/layout_out.csv"]
cli_case("place: --stats missing", [*_PLACE, "--stats", "{dir}/nope.parquet"],
         "nope.parquet: load statistics file not found", must_not_exist=("layout_out.csv",))
cli_case("place: --stats not Parquet", [*_PLACE, "--stats", "{dir}/afile"],
         "afile: load statistics are an SGLang logical_count .json",
         must_not_exist=("layout_out.csv",))
cli_case("place: --stats trace with a bad expert id (the real cause, not 'no tokens')",
         [*_PLACE, "--stats", "{dir}/badexpert.parquet"], "badexpert.parquet",
         "expert id 200 out of range 0..7", must_not_exist=("layout_out.csv",))
cli_case("place: --replicas for a strategy that places none",
         [*_PLACE, "--stats", "{dir}/trace.parquet", "--strategy", "greedy", "--replicas", "2"],
         "greedy does not support --replicas", must_not_exist=("layout_out.csv",))
cli_case("place: more --replicas than GPUs can hold",
         [*_PLACE, "--stats", "{dir}/trace.parquet", "--replicas", "1000"],
         "1000 replicas per layer", "at most 120", must_not_exist=("layout_out.csv",))
cli_case("place: --balance-eps for eplb", [*_PLACE, "--stats", "{dir}/trace.parquet",
                                           "--strategy", "eplb", "--balance-eps", "0.1"],
         "eplb does not support --balance-eps", must_not_exist=("layout_out.csv",))
cli_case("place: --flatten-popularity for a strategy that does not fit a token sample",
         [*_PLACE, "--stats", "{dir}/trace.parquet", "--strategy", "eplb",
          "--flatten-popularity", "1"],
         "eplb does not use --flatten-popularity", must_not_exist=("layout_out.csv",))
cli_case("place: --flatten-popularity above 1",
         [*_PLACE, "--stats", "{dir}/trace.parquet", "--strategy", "dedup",
          "--flatten-popularity", "2"], "--flatten-popularity", "<= 1",
         must_not_exist=("layout_out.csv",))
cli_case("trace synth: --tenant with a reversed GPU range",
         ["trace", "synth", "--model", "{dir}/tiny.json", "--tokens", "8", "--out",
          "{dir}/syn.parquet", "--tenant", "gpus=5-3"], "gpus range '5-3' is reversed",
         must_not_exist=("syn.parquet",))
cli_case("sweep: --scheduler not an address",
         ["sweep", "{dir}/study.toml", "--scheduler", "localhost", "--out", "{dir}/sw"],
         "--scheduler: 'localhost': not an address", must_not_exist=("sw",))
cli_case("place: unknown --strategy", [*_PLACE, "--stats", "{dir}/trace.parquet", "--strategy",
                                       "magic"], "invalid choice: 'magic'",
         must_not_exist=("layout_out.csv",))
cli_case("place: --topology missing", ["place", "--topology", "{dir}/nope.json", "--stats",
                                       "{dir}/trace.parquet", "--out", "{dir}/layout_out.csv"],
         "nope.json", "not found", must_not_exist=("layout_out.csv",))
cli_case("place: --per-layer-per-gpu 0", [*_PLACE, "--stats", "{dir}/trace.parquet",
                                          "--per-layer-per-gpu", "0"], "--per-layer-per-gpu",
         ">= 1",
         must_not_exist=("layout_out.csv",))
cli_case("place: --slots-per-gpu 0", [*_PLACE, "--stats", "{dir}/trace.parquet",
                                      "--slots-per-gpu", "0"], "--slots-per-gpu", ">= 1",
         must_not_exist=("layout_out.csv",))
_SIM = ["simulate", "--trace", "{dir}/trace.parquet", "--topology", "{dir}/cluster.json",
        "--out", "{dir}/run"]
cli_case("simulate: --trace missing", ["simulate", "--trace", "{dir}/nope.parquet", "--topology",
                                       "{dir}/cluster.json", "--layout", "{dir}/layout.csv",
                                       "--out", "{dir}/run"],
         "nope.parquet: trace file not found", subprocess=True, must_not_exist=("run",))
cli_case("simulate: --layout names a GPU outside the cluster",
         [*_SIM, "--layout", "{dir}/layout9.csv"], "layout9.csv", "gpu 9 out of range",
         must_not_exist=("run",))
cli_case("simulate: --topology is not JSON", [*_SIM, "--layout", "{dir}/layout.csv",
                                              "--topology", "{dir}/afile"],
         "afile: unknown topology file type", must_not_exist=("run",))
cli_case("simulate: --chunk-bytes 0", [*_SIM, "--layout", "{dir}/layout.csv", "--chunk-bytes",
                                       "0"], "--chunk-bytes", "must be >= 1",
         must_not_exist=("run",))
cli_case("simulate: --flow-tolerance without --mode flow",
         [*_SIM, "--layout", "{dir}/layout.csv", "--flow-tolerance", "0.1"],
         "--flow-tolerance and --mode des/analytic contradict: only mode flow takes it",
         must_not_exist=("run",))
cli_case("simulate: --mode flow with --flow-tolerance 1",
         [*_SIM, "--layout", "{dir}/layout.csv", "--mode", "flow", "--flow-tolerance", "1"],
         "--flow-tolerance", "must be >= 0 and <= 0.5", must_not_exist=("run",))
cli_case("simulate: --inflight not a number", [*_SIM, "--layout", "{dir}/layout.csv",
                                               "--inflight", "two"], "--inflight",
         "expected an integer", must_not_exist=("run",))
