"""Tables in docs/ generated from the definitions they describe, so defaults cannot drift.

A page holds a generated table between two comments::

    <!-- generated: link-defaults (make docs) -->
    | field | default | meaning |
    ...
    <!-- end generated -->

``make docs`` (``python -m tests.docs_tables``) rewrites every such block from :data:`TABLES`;
``tests/test_docs.py`` fails when a block is not what its generator gives.
"""

from __future__ import annotations

import dataclasses
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
REGENERATE = "regenerate: make docs (python -m tests.docs_tables)"
_BLOCK = re.compile(
    r"(<!-- generated: (?P<name>[\w-]+) \(make docs\) -->\n)(?P<body>.*?)(<!-- end generated -->)",
    re.S,
)


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return f"`{str(v).lower()}`"
    if isinstance(v, float):
        return f"`{v:g}`"
    if isinstance(v, tuple | list):
        return f"`{list(v)}`"
    return f"`{v}`"


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _default(f: dataclasses.Field[Any]) -> str:
    if f.default is not dataclasses.MISSING:
        return "derived" if f.default is None else _value(f.default)
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return "derived"
    return "required"


def dataclass_table(*classes: type, skip: tuple[str, ...] = ()) -> str:
    """| field | default | meaning | for the fields of ``classes`` that carry a help text."""
    rows = ["| field | default | meaning |", "|---|---|---|"]
    for cls in classes:
        for f in dataclasses.fields(cls):
            if f.name in skip:
                continue
            rng = f.metadata.get("range")
            meaning = f.metadata.get("help", "") + (f" ({rng.text()})" if rng else "")
            rows.append(f"| `{f.name}` | {_default(f)} | {_cell(meaning)} |")
    return "\n".join(rows) + "\n"


def families_table() -> str:
    from simulator.cluster.families import BUILDERS

    rows = ["| family | what it builds | shape parameters (default; range) |", "|---|---|---|"]
    for name, fam in BUILDERS.items():
        params = "; ".join(
            f"`{p.name}` ({'derived' if p.default is None else _value(p.default).strip('`')}"
            f"{'; ' + p.range.text() if p.range else ''}): {p.help.rstrip('.')}"
            for p in fam.shape
        )
        note = ""
        if fam.excluded_link_params:
            note = " Link parameters not used: " + ", ".join(
                f"`{n}`" for n in fam.excluded_link_params) + "."
        rows.append(f"| `{name}` | {_cell(fam.summary)}.{note} | {_cell(params)} |")
    return "\n".join(rows) + "\n"


def presets_table() -> str:
    from simulator.cluster.presets import PRESETS

    rows = ["| preset | cluster | numbers | sources (assumed) |", "|---|---|---|---|"]
    for name, preset in PRESETS.items():
        p = preset.published
        numbers = (f"NVLink {p.nvlink_gbyte_per_s_both_directions:g} GB/s per GPU (both"
                   f" directions), one {p.nic_gbit_per_s:g} Gb/s NIC per GPU")
        if p.gpus_per_tray:
            numbers += f", trays of {p.gpus_per_tray}"
        if p.ep_size:
            numbers += (f", EP{p.ep_size} with {p.redundant_experts} redundant experts"
                        f" ({p.routed_experts_per_gpu} per GPU)")
        sources = "; ".join(p.sources) + "".join(f" (assumed: {a})" for a in p.assumed)
        rows.append(f"| `{name}` | {_cell(preset.summary)} | {_cell(numbers)} |"
                    f" {_cell(sources)} |")
    return "\n".join(rows) + "\n"


def _model_spec() -> str:
    from traces import ModelSpec

    return dataclass_table(ModelSpec)


def _link_defaults() -> str:
    from simulator.cluster.builders import LinkDefaults

    return dataclass_table(LinkDefaults)


def _solver_options() -> str:
    from placement import SolverOptions

    return dataclass_table(SolverOptions)


def _sim_config() -> str:
    from simulator.config import SimConfig
    from simulator.traffic_config import TrafficConfig

    return dataclass_table(SimConfig, TrafficConfig, skip=("traffic",))


def _study_defaults() -> str:
    from experiments.studies.spec import DEFAULT_BASE

    rows = ["| key | default |", "|---|---|"]

    def walk(prefix: str, node: dict[str, Any]) -> None:
        for key, value in node.items():
            path = f"{prefix}{key}"
            if isinstance(value, dict) and value:
                walk(path + ".", value)
            else:
                shown = f"`{json.dumps(value)}`" if isinstance(value, str) else _value(value)
                rows.append(f"| `{path}` | {shown} |")

    walk("", DEFAULT_BASE)
    return "\n".join(rows) + "\n"


TABLES: dict[str, Callable[[], str]] = {
    "model-spec": _model_spec,
    "link-defaults": _link_defaults,
    "families": families_table,
    "presets": presets_table,
    "solver-options": _solver_options,
    "sim-config": _sim_config,
    "study-defaults": _study_defaults,
}


def fill(text: str, where: str = "page") -> str:
    """``text`` with every generated block rewritten by its generator."""

    def one(m: re.Match[str]) -> str:
        name = m.group("name")
        if name not in TABLES:
            raise KeyError(f"{where}: unknown generated table {name!r}; known: {sorted(TABLES)}")
        return m.group(1) + TABLES[name]() + m.group(4)

    return _BLOCK.sub(one, text)


def pages() -> list[Path]:
    return sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])


def main() -> int:
    for page in pages():
        text = page.read_text()
        new = fill(text, str(page.relative_to(ROOT)))
        if new != text:
            tmp = page.with_name(f".{page.name}.tmp")
            tmp.write_text(new)
            tmp.replace(page)
            print(f"updated {page.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
