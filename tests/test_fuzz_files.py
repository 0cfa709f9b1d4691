"""Fuzzing the readers of cluster, layout and study files: cluster JSON (mutated and random),
layout tables, GraphML clusters and study files.  Any exception other than InputError fails
(profiles in tests/fuzzing.py).
"""

from __future__ import annotations

import re
import tomllib
from xml.sax.saxutils import escape

import pandas as pd
from badinput import _cluster_dict
from badinput_cli import STUDY_TOML, _graphml_text
from fuzzing import FUZZ, _mutate_json, json_paths, json_values, only_input_errors
from hypothesis import given
from hypothesis import strategies as st

from experiments.studies.spec import build_study, load_study_file
from placement.layout_io import layout_from_frame, load_layout
from simulator.cluster.io import cluster_from_dict, cluster_from_graphml, load_cluster

# --- cluster JSON -----------------------------------------------------------------------------


@FUZZ
@given(path=json_paths, value=json_values, delete=st.booleans())
def test_cluster_from_mutated_dict(path, value, delete):
    d = _mutate_json(_cluster_dict(), path, value, delete)
    only_input_errors(lambda: cluster_from_dict(d))


@FUZZ
@given(
    link=st.integers(0, 5),
    field=st.sampled_from(["a", "b", "bandwidth_bytes_per_s", "latency_s", "weight", "tier"]),
    number=st.floats(allow_nan=True, allow_infinity=True) | st.integers(-(2**80), 2**80),
)
def test_cluster_link_numbers(link, field, number):
    d = _cluster_dict()
    d["links"][link][field] = number
    only_input_errors(lambda: cluster_from_dict(d))


@FUZZ
@given(value=json_values)
def test_cluster_from_random_json(value):
    only_input_errors(lambda: cluster_from_dict(value))


@FUZZ
@given(data=st.binary(max_size=300))
def test_cluster_loader_on_random_bytes(data, tmp_path_factory):
    p = tmp_path_factory.mktemp("fz") / "c.json"
    p.write_bytes(data)
    only_input_errors(lambda: load_cluster(p))


# --- layout tables ----------------------------------------------------------------------------

_layout_cells = (
    st.integers(-5, 12)
    | st.integers(-(2**62), 2**62)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=3)
    | st.none()
)


@FUZZ
@given(
    columns=st.lists(st.sampled_from(["layer", "expert", "replica", "gpu", "server", "x"]),
                     min_size=0, max_size=5, unique=True),
    rows=st.integers(0, 10),
    cells=st.lists(_layout_cells, min_size=50, max_size=50),
    int_only=st.booleans(),
    indices=st.sampled_from([(), (1, 2)]),
)
def test_layout_from_random_frames(columns, rows, cells, int_only, indices):
    data = {}
    for j, c in enumerate(columns):
        vals = [cells[(j * 10 + r) % len(cells)] for r in range(rows)]
        if int_only:
            vals = [v if isinstance(v, int) else r % 4 for r, v in enumerate(vals)]
        data[c] = vals
    df = pd.DataFrame(data)
    only_input_errors(lambda: layout_from_frame(df, 2, 4, 2, indices))


@FUZZ
@given(text=st.text(alphabet="layerxpticgu,0123456789-.\n\" ", max_size=200))
def test_layout_loader_on_random_csv(text, tmp_path_factory):
    p = tmp_path_factory.mktemp("fz") / "layout.csv"
    p.write_text("layer,expert,replica,gpu\n" + text)
    only_input_errors(lambda: load_layout(p, 2, 4, 2, (1, 2)))



# --- GraphML clusters -------------------------------------------------------------------------


@FUZZ
@given(
    edits=st.lists(st.tuples(st.integers(min_value=0), st.integers(0, 6),
                             st.text(alphabet='<>/="\' abdegknrtx0123456789.-', max_size=8)),
                   min_size=1, max_size=5),
)
def test_graphml_loader_on_mutated_xml(edits, tmp_path_factory):
    text = _graphml_text()
    for pos, drop, insert in edits:
        i = pos % (len(text) + 1)
        text = text[:i] + insert + text[i + drop :]
    p = tmp_path_factory.mktemp("fz") / "c.graphml"
    p.write_text(text)
    only_input_errors(lambda: load_cluster(p))


@FUZZ
@given(
    attr=st.sampled_from(["kind", "server", "tier", "group", "bandwidth_bytes_per_s", "latency_s",
                          "weight", "name"]),
    which=st.integers(0, 20),
    value=st.text(max_size=6) | st.floats().map(str) | st.integers(-(2**70), 2**70).map(str),
)
def test_graphml_loader_on_random_attribute_values(attr, which, value):
    text = _graphml_text()
    ids = re.findall(rf'<key id="([^"]+)"[^>]*attr\.name="{attr}"', text)
    datas = [m for k in ids for m in re.finditer(rf'<data key="{k}">[^<]*</data>', text)]
    if datas:
        m = datas[which % len(datas)]
        key = m.group(0).split('"')[1]
        text = text[: m.start()] + f'<data key="{key}">{escape(value)}</data>' + text[m.end() :]
    only_input_errors(lambda: cluster_from_graphml(text))


# --- study files ------------------------------------------------------------------------------

_STUDY_BASE = tomllib.loads(STUDY_TOML)
_small_values = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 40) | st.floats(allow_nan=True)
    | st.sampled_from(["", "fat-tree", "round-robin", "ilp-load", "synthetic", "x.json"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(["name", "k", "num_servers", "top_k", "seed", "params", "family", "x"]),
        inner, max_size=3),
    max_leaves=8,
)


@FUZZ
@given(path=json_paths, value=_small_values, delete=st.booleans())
def test_study_builder_on_mutated_definitions(path, value, delete, tmp_path):
    raw = _mutate_json(_STUDY_BASE, path, value, delete)
    only_input_errors(lambda: build_study(raw, base_dir=tmp_path))


@FUZZ
@given(
    axes=st.dictionaries(
        st.sampled_from(["seed", "model.top_k", "topology.params.num_servers", "strategy.name",
                         "trace.fit_tokens", "sim.x", "study", "model", "seed, trace.seq_len",
                         "topology.params", "topology.family", "x", ""]),
        _small_values, max_size=3),
)
def test_study_builder_on_random_axes(axes, tmp_path):
    raw = {**_STUDY_BASE, "axes": axes}
    only_input_errors(lambda: build_study(raw, base_dir=tmp_path))


@FUZZ
@given(text=st.text(alphabet='[]{}="., \nseditomlpax0123456789', max_size=120))
def test_study_file_on_random_text(text, tmp_path_factory):
    p = tmp_path_factory.mktemp("fz") / "study.toml"
    p.write_text(text)
    only_input_errors(lambda: load_study_file(p))
