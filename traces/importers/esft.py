"""ESFT expert-score logs: a folder of ``expert_weights_<L>.txt``, one file per MoE layer.

Format (see the data README): one line per sequence, line i is the same sequence in every
layer file; a line holds the ``top_k`` expert ids of each token (tab-separated), an empty
field, then as many gate probabilities.  Files are read in lockstep, one line (one sequence)
at a time, so memory stays bounded by one chunk of tokens.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import BinaryIO

import numpy as np

from traces.importers.common import BlockBuilder
from traces.infra.errors import InputError
from traces.io import DEFAULT_ROW_GROUP_TOKENS
from traces.model import ModelSpec, deepseek_v2_lite
from traces.trace import RoutingTrace, TraceMeta, find_bad_route

FILE_PATTERN = re.compile(r"^expert_weights_(\d+)\.txt$")


def esft_layer_files(folder: Path, model: ModelSpec) -> list[Path]:
    """The layer files of one ESFT task folder, in the model's MoE layer order."""
    if not folder.is_dir():
        raise InputError(f"{folder}: ESFT input must be a folder of expert_weights_<L>.txt files")
    found: dict[int, Path] = {}
    for f in folder.iterdir():
        m = FILE_PATTERN.match(f.name)
        if m:
            found[int(m.group(1))] = f
    if not found:
        nested = sorted(d.name for d in folder.iterdir() if d.is_dir() and any(
            FILE_PATTERN.match(x.name) for x in d.iterdir()))
        hint = f" (it has task folders {', '.join(nested)}: pass one of them)" if nested else ""
        raise InputError(f"{folder}: no expert_weights_<L>.txt files{hint}")
    moe = set(model.moe_layer_indices)
    extra = sorted(set(found) - moe)
    if extra:
        raise InputError(
            f"{found[extra[0]]}: layer {extra[0]} is not a MoE layer of {model.name!r} (MoE"
            f" layers {model.moe_layer_indices[0]}..{model.moe_layer_indices[-1]}); wrong --model?"
        )
    missing = [layer for layer in model.moe_layer_indices if layer not in found]
    if missing:
        raise InputError(
            f"{folder}: expert_weights_{missing[0]}.txt missing ({len(missing)} of"
            f" {model.num_moe_layers} MoE layer files of {model.name!r} missing)"
        )
    return [found[layer] for layer in model.moe_layer_indices]


def _parse_fields(text: str, dtype: type, where: str, what: str) -> np.ndarray:
    fields = text.split("\t")
    try:
        return np.array(fields, dtype=dtype)
    except (ValueError, OverflowError):
        for i, f in enumerate(fields):
            try:
                dtype(f)
            except ValueError:
                raise InputError(
                    f"{where}: {what} field {i + 1} is {f[:20]!r}, not a number"
                ) from None
            try:
                np.array([f], dtype=dtype)
            except OverflowError:
                raise InputError(
                    f"{where}: {what} field {i + 1} is {f[:20]!r}, too large"
                ) from None
        raise InputError(f"{where}: cannot parse the {what}") from None


def _parse_line(
    raw: bytes, where: str, top_k: int, want_gates: bool | None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Expert ids [tokens, k] (int64) and gate probabilities [tokens, k] (or None) of one line."""
    try:
        text = raw.decode("ascii").rstrip("\r\n")
    except UnicodeDecodeError:
        raise InputError(f"{where}: not a text line (non-ASCII bytes)") from None
    if not text.strip():
        raise InputError(f"{where}: empty line (expected expert ids of every token)")
    parts = text.split("\t\t")
    if len(parts) > 2:
        raise InputError(f"{where}: more than one empty field; expected ids, '', gates")
    ids = _parse_fields(parts[0], int, where, "expert id")
    if ids.size % top_k:
        raise InputError(
            f"{where}: {ids.size} expert ids is not a multiple of top_k={top_k} (truncated line?)"
        )
    gates = None
    if len(parts) == 2:
        gates = _parse_fields(parts[1], float, where, "gate")
        if gates.size != ids.size:
            raise InputError(
                f"{where}: {gates.size} gate probabilities for {ids.size} expert ids (truncated"
                " line?)"
            )
        bad = ~np.isfinite(gates) | (gates < 0) | (gates > 1)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise InputError(
                f"{where}: token {i // top_k}: gate {gates[i]} is not a probability in [0, 1]"
            )
        gates = gates.reshape(-1, top_k)
    if want_gates is True and gates is None:
        raise InputError(
            f"{where}: no gate probabilities, but earlier lines have them (truncated line?)"
        )
    if want_gates is False and gates is not None:
        raise InputError(f"{where}: has gate probabilities, but earlier lines do not")
    return ids.reshape(-1, top_k), gates


def iter_esft(
    folder: str | Path,
    model: ModelSpec | None = None,
    chunk_tokens: int = DEFAULT_ROW_GROUP_TOKENS,
) -> Iterator[RoutingTrace]:
    """Stream one ESFT task folder as trace blocks; one sequence per line, seq_id = line - 1.

    ``model`` defaults to DeepSeek-V2-Lite (the model ESFT recorded).  Gate probabilities are
    kept (float32) when the files have them.
    """
    folder = Path(folder)
    model = model or deepseek_v2_lite()
    files = esft_layer_files(folder, model)
    meta = TraceMeta(
        model=model,
        source=f"ESFT expert-score logs {folder}",
        produced_by="moe-netsim trace import --format esft",
    )
    k = model.top_k
    builder = BlockBuilder(meta, chunk_tokens)
    want_gates: bool | None = None
    with ExitStack() as stack:
        handles: list[BinaryIO] = [stack.enter_context(open(f, "rb")) for f in files]
        line_no = 0
        while True:
            raws = [h.readline() for h in handles]
            ended = [not r for r in raws]
            if all(ended):
                break
            line_no += 1
            if any(ended):
                short = files[ended.index(True)]
                long_ = files[ended.index(False)]
                raise InputError(
                    f"{short}: has {line_no - 1} lines but {long_.name} has at least {line_no};"
                    " every layer file needs one line per sequence (truncated file?)"
                )
            experts: list[np.ndarray] = []
            gates: list[np.ndarray | None] = []
            for li, (raw, f) in enumerate(zip(raws, files, strict=True)):
                where = f"{f}, line {line_no} (MoE layer {model.moe_layer_indices[li]})"
                ids, g = _parse_line(raw, where, k, want_gates)
                want_gates = g is not None
                if experts and ids.shape[0] != experts[0].shape[0]:
                    raise InputError(
                        f"{where}: {ids.shape[0]} tokens, but {files[0].name} has"
                        f" {experts[0].shape[0]} on this line (truncated or misaligned file?)"
                    )
                bad = find_bad_route(ids[:, None, :], model.num_routed_experts)
                if bad is not None:
                    raise InputError(f"{where}: token {bad[0]}: {bad[2]}")
                experts.append(ids)
                gates.append(g)
            n = experts[0].shape[0]
            yield from builder.add(
                np.stack(experts, axis=1),
                seq_id=np.full(n, line_no - 1, dtype=np.int64),
                position=np.arange(n, dtype=np.int32),
                gates=np.stack(gates, axis=1) if want_gates else None,  # type: ignore[arg-type]
            )
        if line_no == 0:
            raise InputError(f"{files[0]}: empty file (no sequences)")
    yield from builder.finish()
