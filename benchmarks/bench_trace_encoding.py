"""Benchmark: what reading the expert ids of a trace costs in the native encoding and in two
alternatives (issue 15: the part of a replay that every mode shares).

The native format stores each MoE layer's expert ids as a Parquet column of fixed-size lists
(``experts_L<i>``: ``fixed_size_list<uint8>[top_k]``, :mod:`traces.io`).  Parquet keeps a
repetition and a definition level per id of a list column, and decoding them is most of what
a read costs.  This benchmark writes the reference trace of ``bench_simulator.py`` (synthetic
DeepSeek-R1, 58 layers, top-8 of 256) with the project's writer, re-encodes its expert columns
in two layouts without levels, and times a read of every row group of each file in a fresh
subprocess (best of ``--repeats`` CPU times; pyarrow's threads count):

native     the file as ``TraceWriter`` wrote it (fixed-size lists, zstd);
plain      the same lists without compression or dictionaries (what the levels cost alone);
binary     each token's ids as one ``fixed_size_binary[top_k]`` value (zstd);
word       each token's ids as one ``uint64`` (only when they fill 8 bytes: top-8 of at most
           256 experts), zstd.

The alternatives are not formats the project reads; they measure what a change of the native
encoding would save, against the read that both replay modes pay.

    PYTHONPATH=. python benchmarks/bench_trace_encoding.py [--tokens 262144]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from bench_simulator import write_trace

ROW_GROUP_TOKENS = 32_768


def re_encode(native: Path, out: Path, layout: str) -> None:
    """``native`` with every fixed-size-list column stored in ``layout`` (module docstring)."""
    table = pq.read_table(native)
    if layout == "plain":
        pq.write_table(table, out, row_group_size=ROW_GROUP_TOKENS, compression="none",
                       use_dictionary=False)
        return
    cols = {}
    for name in table.column_names:
        col = table.column(name).combine_chunks()
        if not pa.types.is_fixed_size_list(col.type):
            cols[name] = col
            continue
        k = col.type.list_size
        ids = np.ascontiguousarray(col.flatten().to_numpy().reshape(-1, k))
        width = k * ids.itemsize
        if layout == "word":
            if width != 8:
                raise SystemExit(f"word: {k} ids of {ids.itemsize} bytes are not 8 bytes")
            cols[name] = pa.array(ids.view(np.uint64).ravel())
        else:
            cols[name] = pa.FixedSizeBinaryArray.from_buffers(
                pa.binary(width), ids.shape[0], [None, pa.py_buffer(ids.tobytes())])
    pq.write_table(pa.table(cols), out, row_group_size=ROW_GROUP_TOKENS, compression="zstd")


def column_ids(col: pa.Array) -> np.ndarray:
    """A column's ids as a [tokens, top_k * bytes per id] uint8 array, whatever the layout."""
    if pa.types.is_fixed_size_list(col.type):
        values = col.flatten().to_numpy()
    elif pa.types.is_fixed_size_binary(col.type):
        values = np.frombuffer(col.buffers()[1], dtype=np.uint8)
    else:
        values = col.to_numpy()
    return values.view(np.uint8).reshape(len(col), -1)


def first_ids(path: Path, column: str) -> np.ndarray:
    """The ids of ``column`` in the first row group (:func:`column_ids`)."""
    return column_ids(
        pq.ParquetFile(path).read_row_group(0, columns=[column]).column(0).combine_chunks())


def read_all(path: Path, repeats: int) -> float:
    """Best CPU seconds of reading every row group of ``path`` into numpy id arrays."""
    best = float("inf")
    for _ in range(repeats):
        c0 = time.process_time()
        pf = pq.ParquetFile(path)
        for i in range(pf.num_row_groups):
            batch = pf.read_row_group(i)
            for name in batch.column_names:
                if name.startswith("experts_L"):
                    column_ids(batch.column(name).combine_chunks())
        best = min(best, time.process_time() - c0)
    return best


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokens", type=int, default=262_144)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--read", type=Path, help=argparse.SUPPRESS)  # subprocess: time one file
    args = p.parse_args()
    if args.read:
        print(json.dumps({"cpu_s": read_all(args.read, args.repeats)}))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        files = {"native": Path(tmp) / "native.parquet"}
        write_trace(files["native"], args.tokens, ROW_GROUP_TOKENS, 256, args.seed)
        for layout in ("plain", "binary", "word"):
            files[layout] = Path(tmp) / f"{layout}.parquet"
            re_encode(files["native"], files[layout], layout)
            for column in ("experts_L3", "experts_L60"):  # the same ids, or the timing is moot
                if not np.array_equal(first_ids(files[layout], column),
                                      first_ids(files["native"], column)):
                    raise SystemExit(f"{layout}: {column} differs from the native file")
        print(f"expert ids of {args.tokens} R1 tokens (58 layers x top-8), best of"
              f" {args.repeats} reads, CPU s")
        base = None
        for layout, path in files.items():
            done = subprocess.run([sys.executable, __file__, "--read", str(path),
                                   "--repeats", str(args.repeats)],
                                  check=True, capture_output=True, text=True)
            cpu = json.loads(done.stdout.strip().splitlines()[-1])["cpu_s"]
            base = base or cpu
            size_mb = path.stat().st_size / 1e6
            print(f"{layout:>7} {cpu:7.3f} s  {base / cpu:5.1f}x  {size_mb:6.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
