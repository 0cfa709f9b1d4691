"""Bad routing options: options a mode ignores, unknown and replaced names.  One line, exit 2,
nothing written (CLI); one InputError (library, studies)."""

from __future__ import annotations

from pathlib import Path

import pytest
from badinput import Case, run_cli_case

from experiments.studies.sections import split_sim_options
from simulator.traffic_config import TrafficConfig
from traces.infra.errors import InputError

_SIM = ["simulate", "--trace", "{dir}/trace.parquet", "--topology", "{dir}/cluster.json",
        "--layout", "{dir}/layout.csv", "--out", "{dir}/run"]

CASES = [
    Case("command line", "flows per pair without ecmp", ("flows_per_pair", "'ecmp' only"),
         argv=(*_SIM, "--flows-per-pair", "4")),
    Case("command line", "flows per pair 0", ("--flows-per-pair", ">= 1"),
         argv=(*_SIM, "--multipath", "ecmp", "--flows-per-pair", "0")),
    Case("command line", "unknown multipath mode", ("--multipath", "invalid choice: 'magic'"),
         argv=(*_SIM, "--multipath", "magic")),
    Case("command line", "unknown dispatch scheme", ("--dispatch", "invalid choice: 'nccl'"),
         argv=(*_SIM, "--dispatch", "nccl")),
    Case("command line", "replaced --server-dedup", ("--server-dedup was replaced",
         "--dispatch deepep-normal"), argv=(*_SIM, "--server-dedup")),
]


@pytest.mark.parametrize("c", CASES, ids=[c.name for c in CASES])
def test_cli_rejects_in_one_line_and_writes_nothing(c: Case, tmp_path: Path) -> None:
    code, err = run_cli_case(c, tmp_path)
    assert code == 2, err
    assert err.startswith("moe-netsim: error: ") and err.strip().count("\n") == 0, err
    for fragment in c.expect:
        assert fragment in err, (fragment, err)
    assert not (tmp_path / "run").exists()
    assert not list(tmp_path.glob("*.partial.*"))


@pytest.mark.parametrize(
    "sim, fragments",
    [
        ({"server_dedup": True},
         ("sim.server_dedup was replaced", "sim.dispatch = 'deepep-normal'")),
        ({"dispatch": "deepep"}, ("unknown dispatch scheme 'deepep'", "deepep-normal")),
        ({"multipath": "spray", "flows_per_pair": 2}, ("'ecmp' only",)),
        ({"multipath": "adaptive"}, ("unknown multipath mode 'adaptive'", "spray")),
    ],
)
def test_study_keys_reject_in_one_line(sim, fragments) -> None:
    with pytest.raises(InputError) as info:
        split_sim_options(sim)
    msg = str(info.value)
    assert "\n" not in msg
    for fragment in fragments:
        assert fragment in msg, (fragment, msg)


def test_study_keys_reach_the_config() -> None:
    cfg = split_sim_options({"dispatch": "deepep-ll", "multipath": "ecmp", "flows_per_pair": 3})
    assert cfg.traffic == TrafficConfig(dispatch="deepep-ll", multipath="ecmp", flows_per_pair=3)


@pytest.mark.parametrize("dispatch, noted", [("deepep-normal", True), ("deepep-ll", False),
                                             ("all-to-all", False)])
def test_deepep_normal_on_pooled_nics_says_what_it_does(dispatch: str, noted: bool,
                                                        tmp_path: Path) -> None:
    # The bad-input cluster has pooled NICs: deepep-normal runs there (as NVSHMEM maps several
    # GPUs to one NIC) but says in one line how it differs from the per-GPU-NIC hardware.
    c = Case("command line", "pooled", (), argv=(*_SIM, "--dispatch", dispatch, "--no-report"))
    code, err = run_cli_case(c, tmp_path)
    assert code == 0, err
    notes = [ln for ln in err.splitlines() if ln.startswith("note: ")]
    assert len(notes) == int(noted), err
    if noted:
        assert "no NIC per GPU" in notes[0] and "deepep-normal" in notes[0]


def test_scheme_note_only_for_deepep_normal_on_pooled_nics() -> None:
    from simulator.dispatch import scheme_note
    from simulator.traffic_config import DISPATCH_SCHEMES

    for scheme in DISPATCH_SCHEMES:
        assert scheme_note(scheme, True, "c") is None
        assert (scheme_note(scheme, False, "c") is not None) == (scheme == "deepep-normal")
