"""Expert load statistics: routed-token counts per (MoE layer, expert), without tokens.

SGLang's expert-distribution statistics (``{"logical_count": [layers][experts]}``) are such
counts; the strategy uses them directly as activation weights and the generator can be fitted
to them.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from traces.infra.atomic import atomic_output
from traces.infra.errors import InputError
from traces.infra.file_format import FileFormat
from traces.infra.jsonfile import read_json_file
from traces.io import META_KEY, iter_trace, open_parquet, read_trace_meta
from traces.model import ModelSpec, model_preset
from traces.stats import expert_counts


@dataclass(frozen=True, eq=False)
class LoadStats:
    """``counts[l, i]``: tokens routed to expert i of the l-th MoE layer of ``model``."""

    model: ModelSpec
    counts: np.ndarray  # float64 [moe_layers, experts]
    source: str = ""

    def __post_init__(self) -> None:
        want = (self.model.num_moe_layers, self.model.num_routed_experts)
        if self.counts.shape != want:
            raise InputError(
                f"{self.source or 'load statistics'}: counts have shape {list(self.counts.shape)},"
                f" expected [{want[0]} MoE layers, {want[1]} experts]"
            )
        if not np.isfinite(self.counts).all() or (self.counts < 0).any():
            row = int(np.argwhere(~np.isfinite(self.counts) | (self.counts < 0))[0][0])
            raise InputError(
                f"{self.source or 'load statistics'}: MoE layer"
                f" {self.model.moe_layer_indices[row]} has negative, NaN or infinite counts"
            )

    def activation(self) -> np.ndarray:
        """p[l, i] = counts / tokens per layer, rows summing to top_k (the ILPLoad weights)."""
        totals = self.counts.sum(axis=1, keepdims=True)
        if (totals <= 0).any():
            row = int(np.flatnonzero(totals[:, 0] <= 0)[0])
            raise InputError(
                f"{self.source or 'load statistics'}: MoE layer"
                f" {self.model.moe_layer_indices[row]} has no routed tokens"
            )
        return self.counts / totals * self.model.top_k


def read_sglang_logical_count(
    path: str | os.PathLike[str], model: ModelSpec | None = None
) -> LoadStats:
    """Read SGLang's ``{"logical_count": [transformer layers][experts]}`` JSON.

    Rows are transformer layers (dense layers must have zero rows); the MoE rows named by
    ``model.moe_layer_indices`` are kept.  Without ``model`` the preset is chosen by geometry
    (61 x 256: DeepSeek-R1, which DeepSeek-V3 shares).
    """
    p = Path(path)
    d = read_json_file(p, "load statistics")
    model = model or _guess_model(p, d)
    if not isinstance(d, dict) or "logical_count" not in d:
        raise InputError(f"{p}: expected a JSON object with key 'logical_count'")
    rows = d["logical_count"]
    if not isinstance(rows, list) or not rows:
        raise InputError(f"{p}: 'logical_count' must be a non-empty list of layers")
    need = max(model.moe_layer_indices) + 1
    if len(rows) < need:
        raise InputError(
            f"{p}: 'logical_count' has {len(rows)} layers but model {model.name!r} needs"
            f" {need} (MoE layers {model.moe_layer_indices[0]}..{model.moe_layer_indices[-1]})"
        )
    moe = set(model.moe_layer_indices)
    for layer, row in enumerate(rows):
        if layer not in moe and isinstance(row, list) and any(
            isinstance(x, (int, float)) and x != 0 for x in row
        ):
            raise InputError(
                f"{p}: logical_count[{layer}] has routed tokens, but layer {layer} is not a MoE"
                f" layer of {model.name!r} (MoE layers {model.moe_layer_indices[0]}.."
                f"{model.moe_layer_indices[-1]}); wrong --model?"
            )
    out = np.zeros((model.num_moe_layers, model.num_routed_experts))
    for li, layer in enumerate(model.moe_layer_indices):
        row = rows[layer]
        if not isinstance(row, list) or len(row) != model.num_routed_experts:
            n = len(row) if isinstance(row, list) else type(row).__name__
            raise InputError(
                f"{p}: logical_count[{layer}] has {n} entries, expected"
                f" {model.num_routed_experts} experts"
            )
        numbers = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in row)
        try:
            if not numbers:
                raise TypeError
            out[li] = np.asarray(row, dtype=np.float64)
        except (TypeError, ValueError, OverflowError):
            raise InputError(
                f"{p}: logical_count[{layer}] holds non-numbers (or numbers too large)"
            ) from None
        if not np.isfinite(out[li]).all() or (out[li] < 0).any():
            i = int(np.flatnonzero(~np.isfinite(out[li]) | (out[li] < 0))[0])
            raise InputError(
                f"{p}: logical_count[{layer}][{i}] = {row[i]}; counts must be finite and >= 0"
            )
    if not (out.sum(axis=1) > 0).any():
        raise InputError(f"{p}: every MoE layer has zero counts; nothing to learn from")
    return LoadStats(model=model, counts=out, source=str(p))


LOAD_STATS_KEY = b"moe_netsim.load_stats"
LOAD_STATS_FORMAT = FileFormat("moe-netsim-load-stats", "moe-netsim load-statistics file",
                               "load-statistics", ("model", "source"))


def save_load_stats(path: str | os.PathLike[str], stats: LoadStats) -> Path:
    """Write load statistics as the project's Parquet file (atomically).

    One row per (MoE layer, expert): ``layer`` (transformer layer index), ``expert``,
    ``count`` (float64); the model geometry and the source travel as JSON in the schema
    metadata under ``moe_netsim.load_stats``.
    """
    p = Path(path)
    L, E = stats.counts.shape
    table = pa.table(
        {
            "layer": np.repeat(np.asarray(stats.model.moe_layer_indices, dtype=np.int32), E),
            "expert": np.tile(np.arange(E, dtype=np.int32), L),
            "count": stats.counts.astype(np.float64).ravel(),
        }
    )
    meta = {**LOAD_STATS_FORMAT.header(), "model": stats.model.to_dict(), "source": stats.source}
    table = table.replace_schema_metadata({LOAD_STATS_KEY: json.dumps(meta).encode()})
    with atomic_output(p) as tmp:
        pq.write_table(table, tmp, compression="zstd")
    return p


def _read_load_stats_parquet(p: Path, model: ModelSpec | None) -> LoadStats:
    pf = open_parquet(p, "load statistics")
    md = pf.schema_arrow.metadata or {}
    try:
        meta = LOAD_STATS_FORMAT.check(json.loads(md[LOAD_STATS_KEY].decode()), str(p))
        file_model = ModelSpec.from_dict(meta["model"])
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise InputError(f"{p}: load-statistics metadata is damaged ({exc})") from None
    if model is not None and (model.num_moe_layers, model.num_routed_experts) != (
        file_model.num_moe_layers, file_model.num_routed_experts
    ):
        raise InputError(
            f"{p}: statistics are for {file_model.name!r} ({file_model.num_moe_layers} MoE"
            f" layers x {file_model.num_routed_experts} experts), not {model.name!r}"
        )
    try:
        df = pf.read().to_pandas()
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputError(f"{p}: load statistics are truncated or corrupt ({exc})") from None
    L, E = file_model.num_moe_layers, file_model.num_routed_experts
    for col, kind in (("layer", "i"), ("expert", "i"), ("count", "if")):
        if col not in df.columns:
            raise InputError(f"{p}: column {col!r} missing; required: layer, expert, count")
        if df[col].dtype.kind not in kind:
            what = "integers" if kind == "i" else "numbers"
            raise InputError(f"{p}: column {col!r} has type {df[col].dtype}; it must hold {what}")
    bad_expert = np.flatnonzero((df["expert"] < 0) | (df["expert"] >= E))
    if bad_expert.size:
        i = int(bad_expert[0])
        raise InputError(f"{p}, row {i}: expert {df['expert'].iat[i]} out of range 0..{E - 1}")
    count = df["count"].to_numpy(dtype=np.float64)
    bad_count = np.flatnonzero(~np.isfinite(count) | (count < 0))
    if bad_count.size:
        i = int(bad_count[0])
        raise InputError(
            f"{p}, row {i}: count {count[i]} is negative, NaN or infinite; counts are token"
            " numbers >= 0"
        )
    pos = {v: i for i, v in enumerate(file_model.moe_layer_indices)}
    not_moe = np.flatnonzero(df["layer"].map(pos).isna().to_numpy())
    if not_moe.size:
        i = int(not_moe[0])
        raise InputError(
            f"{p}, row {i}: layer {df['layer'].iat[i]} is not a MoE layer of"
            f" {file_model.name!r} ({', '.join(map(str, file_model.moe_layer_indices))})"
        )
    repeated = np.flatnonzero(df.duplicated(["layer", "expert"]).to_numpy())
    if repeated.size:
        i = int(repeated[0])
        raise InputError(
            f"{p}, row {i}: (layer {df['layer'].iat[i]}, expert {df['expert'].iat[i]})"
            " appears twice"
        )
    if len(df) != L * E:
        raise InputError(f"{p}: expected {L * E} rows, one per (MoE layer, expert)")
    counts = np.full((L, E), np.nan)
    counts[df["layer"].map(pos).to_numpy(dtype=np.int64), df["expert"].to_numpy()] = df["count"]
    if np.isnan(counts).any():
        raise InputError(f"{p}: some (layer, expert) rows are missing or repeated")
    return LoadStats(model=model or file_model, counts=counts, source=str(meta.get("source", p)))


def load_stats_from_trace(path: str | os.PathLike[str]) -> LoadStats:
    """Routed-token counts of a native trace file (streamed)."""
    meta, n = read_trace_meta(path)
    if n == 0:
        raise InputError(f"{path}: trace has no tokens")
    counts = expert_counts(iter_trace(path)).astype(np.float64)
    return LoadStats(model=meta.model, counts=counts, source=str(path))


StatsKind = Literal["sglang-json", "load-stats", "trace"]


def load_stats_kind(path: str | os.PathLike[str]) -> StatsKind:
    """Which of the three load-statistics forms a file is (by suffix, then Parquet metadata)."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: load statistics file not found")
    if p.is_dir():
        raise InputError(f"{p}: is a folder; load statistics are one .json or .parquet file")
    if p.suffix == ".json":
        return "sglang-json"
    if p.suffix != ".parquet":
        raise InputError(
            f"{p}: load statistics are an SGLang logical_count .json, the .parquet that"
            " `trace import --format sglang` writes, or a native trace .parquet"
        )
    md = open_parquet(p, "load statistics").schema_arrow.metadata or {}
    if LOAD_STATS_KEY in md:
        return "load-stats"
    if META_KEY in md:
        return "trace"
    raise InputError(f"{p}: Parquet file is neither moe-netsim load statistics nor a trace")


def _guess_model(p: Path, d: object) -> ModelSpec:
    """The preset whose geometry fits an SGLang JSON (DeepSeek-R1 for 61 x 256)."""
    try:
        rows = d["logical_count"]  # type: ignore[index]
        shape = (len(rows), len(rows[-1]))
    except (KeyError, TypeError, IndexError):
        return model_preset("deepseek-r1")  # the reader reports what is wrong
    for name in ("deepseek-r1", "deepseek-moe-16b", "deepseek-v2-lite"):
        m = model_preset(name)
        if shape == (m.moe_layer_indices[-1] + 1, m.num_routed_experts):
            return m
    raise InputError(
        f"{p}: logical_count is {shape[0]} layers x {shape[1]} experts, which matches no preset;"
        " pass the model (a preset or a model JSON)"
    )


def load_load_stats(path: str | os.PathLike[str], model: ModelSpec | None = None) -> LoadStats:
    """Load statistics from any of the three forms every command accepts: an SGLang
    ``logical_count`` JSON, the Parquet of ``trace import --format sglang`` or a native trace.

    ``model`` is needed only for a JSON whose geometry matches no preset (a 61 x 256 JSON is
    taken as DeepSeek-R1, which DeepSeek-V3 shares); when given, the file must fit it.
    """
    p = Path(path)
    kind = load_stats_kind(p)
    if kind == "sglang-json":
        return read_sglang_logical_count(p, model)
    if kind == "load-stats":
        return _read_load_stats_parquet(p, model)
    stats = load_stats_from_trace(p)
    if model is not None and _geometry(model) != _geometry(stats.model):
        raise InputError(
            f"{p}: the trace is of {stats.model.name!r} ({stats.model.num_moe_layers} MoE"
            f" layers x {stats.model.num_routed_experts} experts), not {model.name!r}"
        )
    return stats


def _geometry(model: ModelSpec) -> tuple[tuple[int, ...], int]:
    return tuple(model.moe_layer_indices), model.num_routed_experts
