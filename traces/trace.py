"""In-memory routing trace: a block of tokens with their routed experts per MoE layer."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from traces.infra.errors import InputError
from traces.infra.file_format import FileFormat
from traces.model import ModelSpec

# The JSON in a trace file's Parquet metadata (docs/reference/trace-format.md).
TRACE_FORMAT = FileFormat(
    "moe-netsim-trace", "moe-netsim trace", "trace", ("model", "source", "produced_by", "extra"),
    "; tool-specific fields belong under 'extra'",
)


@dataclass(frozen=True, slots=True)
class TraceMeta:
    """What travels inside a trace file besides the token rows."""

    model: ModelSpec
    source: str = field(default="", metadata={"help": "Where the routing came from."})
    produced_by: str = field(default="", metadata={"help": "Tool and settings that wrote it."})
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(
            {
                **TRACE_FORMAT.header(),
                "model": self.model.to_dict(),
                "source": self.source,
                "produced_by": self.produced_by,
                "extra": self.extra,
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str, where: str = "trace") -> TraceMeta:
        try:
            d = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"{where}: metadata is not valid JSON ({exc})") from None
        d = TRACE_FORMAT.check(d, where)
        if not isinstance(d.get("model"), dict):
            raise InputError(f"{where}: metadata key 'model' is missing or not an object")
        if not isinstance(d.get("extra", {}), dict):
            raise InputError(f"{where}: metadata key 'extra' must be an object")
        try:
            model = ModelSpec.from_dict(d["model"])
        except InputError as exc:
            raise InputError(f"{where}: {exc}") from None
        return cls(
            model=model,
            source=str(d.get("source", "")),
            produced_by=str(d.get("produced_by", "")),
            extra=dict(d.get("extra", {})),
        )


def expert_dtype(num_experts: int) -> np.dtype:
    """Smallest unsigned integer type that holds expert ids below ``num_experts``."""
    return np.dtype(np.uint8) if num_experts <= 256 else np.dtype(np.uint16)


@dataclass(frozen=True, slots=True, eq=False)
class RoutingTrace:
    """A block of tokens (a whole trace or one chunk of it).

    ``experts[t, l, r]`` is the r-th routed expert of token t at MoE layer l (the l-th entry of
    ``meta.model.moe_layer_indices``).  ``origin_gpu`` and ``step`` are -1 where not recorded.
    """

    meta: TraceMeta
    experts: np.ndarray
    seq_id: np.ndarray
    position: np.ndarray
    origin_gpu: np.ndarray | None = None
    step: np.ndarray | None = None
    gates: np.ndarray | None = None

    def __post_init__(self) -> None:
        validate_trace(self)

    @property
    def num_tokens(self) -> int:
        return int(self.experts.shape[0])

    @property
    def model(self) -> ModelSpec:
        return self.meta.model

    def take(self, index: np.ndarray | slice) -> RoutingTrace:
        """Tokens selected by ``index`` (a slice or an index array), same metadata."""

        def pick(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[index]

        return replace(
            self,
            experts=self.experts[index],
            seq_id=self.seq_id[index],
            position=self.position[index],
            origin_gpu=pick(self.origin_gpu),
            step=pick(self.step),
            gates=pick(self.gates),
        )

    def iter_blocks(self, block_tokens: int) -> Iterator[RoutingTrace]:
        """Consecutive blocks of at most ``block_tokens`` tokens."""
        if block_tokens < 1:
            raise InputError("block size must be at least one token")
        for start in range(0, self.num_tokens, block_tokens):
            yield self.take(slice(start, start + block_tokens))


def validate_trace(trace: RoutingTrace, where: str = "trace") -> None:
    """Check shapes, dtypes and ranges; raise :class:`InputError` naming the first problem."""
    m = trace.meta.model
    e = trace.experts
    if e.ndim != 3 or e.shape[1:] != (m.num_moe_layers, m.top_k):
        raise InputError(
            f"{where}: experts must have shape [tokens, {m.num_moe_layers}, {m.top_k}],"
            f" got {list(e.shape)}"
        )
    if not np.issubdtype(e.dtype, np.integer):
        raise InputError(f"{where}: expert ids must be integers, got {e.dtype}")
    n = e.shape[0]
    for name in ("seq_id", "position", "origin_gpu", "step"):
        a = getattr(trace, name)
        if a is None:
            continue
        if a.shape != (n,):
            raise InputError(f"{where}: {name} must have one entry per token ({n}), got {a.shape}")
        if not np.issubdtype(a.dtype, np.integer):
            raise InputError(f"{where}: {name} must be integers, got {a.dtype}")
    if trace.gates is not None and trace.gates.shape != e.shape:
        raise InputError(f"{where}: gates must have the shape of experts {list(e.shape)}")
    if n == 0:
        return
    for name, low in (("seq_id", 0), ("position", 0), ("origin_gpu", -1), ("step", -1)):
        a = getattr(trace, name)
        if a is not None and a.min() < low:
            t = int(np.argmax(a < low))
            raise InputError(
                f"{where}: token {t}: {name} {int(a[t])} must be >= {low}"
                + (" (-1 = not recorded)" if low < 0 else "")
            )
    if trace.gates is not None and not np.isfinite(trace.gates).all():
        t, li, _ = np.argwhere(~np.isfinite(trace.gates))[0]
        raise InputError(
            f"{where}: token {t}, MoE layer {m.moe_layer_indices[li]}: gate weight is NaN"
            " or infinite"
        )
    bad = find_bad_route(e, m.num_routed_experts)
    if bad is not None:
        t, li, what = bad
        raise InputError(f"{where}: token {t}, MoE layer {m.moe_layer_indices[li]}: {what}")


def find_bad_route(experts: np.ndarray, num_experts: int) -> tuple[int, int, str] | None:
    """The first (token, MoE layer position, problem) of ``experts[t, l, r]``, or ``None``.

    Problems: an id outside ``0..num_experts-1`` or the ``k`` ids of a token not distinct.
    Importers use this to report the file, line and layer of the first bad entry.
    """
    e = experts
    if e.size == 0:
        return None
    lo, hi = int(e.min()), int(e.max())
    if lo < 0 or hi >= num_experts:
        t, li, r = (int(x) for x in np.argwhere((e < 0) | (e >= num_experts))[0])
        return t, li, f"expert id {int(e[t, li, r])} out of range 0..{num_experts - 1}"
    k = e.shape[2]
    if k > 1:
        dup = _repeated_ids(e)
        if dup is not None:
            t, li = dup
            ids = sorted(int(x) for x in e[t, li])
            return t, li, f"the {k} routed expert ids are not distinct ({ids})"
    return None


# a token's k ids packed into one word of this many bytes are compared lane by lane
_WORD_TYPES: dict[int, np.dtype[Any]] = {
    2: np.dtype(np.uint16), 4: np.dtype(np.uint32), 8: np.dtype(np.uint64),
}
_WORD_CHUNK = 1 << 15  # words per pass: the chain of word operations stays in cache


def _repeated_ids(e: np.ndarray) -> tuple[int, int] | None:
    """The first (token, layer position) of ``e[t, l, r]`` whose ids repeat, or ``None``."""
    # the array in memory order: [tokens, layers, k], or [layers, tokens, k] for the reader's
    # layer-major blocks and the token ranges cut from them
    layer_major = e.strides[1] > e.strides[0]
    mem = e.transpose(1, 0, 2) if layer_major else e
    k = e.shape[2]
    word = _WORD_TYPES.get(k * e.dtype.itemsize)
    if word is not None:  # (a slice is copied first: one pass, the words need the k ids together)
        packed = np.ascontiguousarray(mem).reshape(-1, k).view(word).ravel()
        dup = _repeated_lanes(packed, k).reshape(mem.shape[:2])
    elif k <= 16:  # k(k-1)/2 elementwise comparisons beat sorting every group of k
        dup = np.zeros(mem.shape[:2], dtype=bool)
        for r in range(k - 1):
            for q in range(r + 1, k):
                dup |= mem[:, :, r] == mem[:, :, q]
    else:
        s = np.sort(mem, axis=2)
        dup = (s[:, :, 1:] == s[:, :, :-1]).any(axis=2)
    if not dup.any():
        return None
    if layer_major:  # the first token with a repeat, then its first layer
        t = int(np.argmax(dup.any(axis=0)))
        return t, int(np.argmax(dup[:, t]))
    t, li = (int(x) for x in np.argwhere(dup)[0])
    return t, li


def _repeated_lanes(words: np.ndarray, k: int) -> np.ndarray:
    """Per word of ``k`` equal lanes (a token's ids, packed): whether two lanes are equal.

    Rotating a word by s lanes (s = 1..k/2) lines every lane up with the one s further on,
    so every pair of lanes meets in some rotation; two lanes are equal where the XOR of the
    word and its rotation has a zero lane, which ``(x - ones) & ~x & highs`` detects exactly
    (the classic "has a zero byte" test, per lane).
    """
    bits = words.dtype.itemsize * 8
    lane = bits // k
    ones = sum(1 << (lane * j) for j in range(k))
    word = words.dtype.type
    one, high = word(ones), word(ones << (lane - 1))
    out = np.empty(words.size, dtype=bool)
    chunk = min(_WORD_CHUNK, words.size)
    x, y, acc = (np.empty(chunk, dtype=words.dtype) for _ in range(3))  # reused: in cache
    for start in range(0, words.size, chunk):
        w = words[start:start + chunk]
        xs, ys, a = x[:w.size], y[:w.size], acc[:w.size]
        a.fill(0)
        for s in range(1, k // 2 + 1):
            np.right_shift(w, word(lane * s), out=xs)  # xs = w rotated by s lanes
            np.left_shift(w, word(bits - lane * s), out=ys)
            xs |= ys
            xs ^= w
            np.subtract(xs, one, out=ys)  # ys = (xs - ones) & ~xs
            np.invert(xs, out=xs)
            ys &= xs
            a |= ys
        a &= high
        np.not_equal(a, 0, out=out[start:start + w.size])
    return out
