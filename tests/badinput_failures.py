"""Bad-input cases: what-ifs (`topology whatif`), failure studies and layout repair.

Registered into ``badinput.CASES`` on import (``tests/badinput.py`` imports every case module
in catalogue order).  ``{dir}/cluster.json`` is two servers s0, s1 of two GPUs behind switch sw.
"""

from badinput import cli_case

_WHATIF = ["topology", "whatif", "{dir}/cluster.json", "--out", "{dir}/new.json"]
_NEW = ("new.json",)

cli_case("topology whatif: unknown switch", [*_WHATIF, "--fail", "switch:sw9"],
         "switch:sw9", "has no switch named 'sw9'", "near matches: sw", must_not_exist=_NEW)
cli_case("topology whatif: unknown kind", [*_WHATIF, "--fail", "router:sw"],
         "--fail 'router:sw'", "KIND one of link, switch, server", must_not_exist=_NEW)
cli_case("topology whatif: a switch named as a server", [*_WHATIF, "--fail", "server:sw"],
         "'sw' is a switch, not a server; use switch:sw", must_not_exist=_NEW)
cli_case("topology whatif: failure cuts GPUs off", [*_WHATIF, "--fail", "link:sw~s0"],
         "disconnects 2 GPU(s)", "s1.g0, s1.g1", must_not_exist=_NEW)
cli_case("topology whatif: every server failed",
         [*_WHATIF, "--fail", "server:s0", "--fail", "server:s1"], "leaves cluster 'c' no GPUs",
         must_not_exist=_NEW)
cli_case("topology whatif: degrade factor 0", [*_WHATIF, "--degrade", "link:s0~sw=0"],
         "--degrade 'link:s0~sw=0'", "factor must be > 0 and <= 1, got 0.0",
         must_not_exist=_NEW)
cli_case("topology whatif: degrade factor above 1", [*_WHATIF, "--degrade", "link:s0~sw=2"],
         "factor must be > 0 and <= 1, got 2.0", must_not_exist=_NEW)
cli_case("topology whatif: degrade without a factor", [*_WHATIF, "--degrade", "link:s0~sw"],
         "expected link:A~B=FACTOR", must_not_exist=_NEW)
cli_case("topology whatif: a link failed and degraded",
         [*_WHATIF, "--fail", "link:s0~sw", "--degrade", "link:sw~s0=0.5"],
         "link:sw~s0 is both failed and degraded", must_not_exist=_NEW)

_STUDY = ["study", "failures", "--topology", "{dir}/cluster.json", "--tokens", "8",
          "--out", "{dir}/run"]
_RUN = ("run",)
cli_case("study failures: robust variant of a strategy without a linear cost",
         [*_STUDY, "--strategy", "eplb+robust"], "--strategy eplb+robust",
         "the robust variant is for", must_not_exist=_RUN)
cli_case("study failures: robust strategy with server failures",
         [*_STUDY, "--class", "server", "--strategy", "ilp+robust"],
         "server failures remove GPUs", must_not_exist=_RUN)
cli_case("study failures: unknown strategy", [*_STUDY, "--strategy", "nope"],
         "--strategy nope: unknown strategy 'nope'", must_not_exist=_RUN)
cli_case("study failures: --des-worst -1", [*_STUDY, "--des-worst", "-1"], "--des-worst",
         ">= 0", must_not_exist=_RUN)

_PLACE = ["place", "--topology", "{dir}/cluster.json", "--fit", "{dir}/trace.parquet",
          "--out", "{dir}/new.csv"]
cli_case("place --repair without --healthy", [*_PLACE, "--repair", "{dir}/layout.csv"],
         "--repair needs --healthy CLUSTER", must_not_exist=("new.csv",))
cli_case("place --repair with --strategy",
         [*_PLACE, "--repair", "{dir}/layout.csv", "--healthy", "{dir}/cluster.json",
          "--strategy", "ilp"], "--repair keeps the layout", "drop --strategy",
         must_not_exist=("new.csv",))
cli_case("place --robust with eplb", [*_PLACE, "--robust", "link", "--strategy", "eplb"],
         "--robust: eplb is not one of ilp, ilp-bytes, ilp-load, ilp-origin",
         must_not_exist=("new.csv",))
cli_case("place --healthy without --repair", [*_PLACE, "--healthy", "{dir}/cluster.json"],
         "--healthy is for --repair", must_not_exist=("new.csv",))
