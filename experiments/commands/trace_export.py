"""``moe-netsim trace export``: a native trace in a serving engine's own format."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from experiments.outputs import ENGINE_EXPORT, add_output_argument
from experiments.progress import Feedback, add_progress_arguments
from traces.importers.formats import EXPORT_FORMATS


def register(trace_sub: argparse._SubParsersAction) -> None:
    p = trace_sub.add_parser(
        "export",
        help="Write a native trace in an engine's format (SGLang, vLLM, TensorRT-LLM, Megatron).",
        description="Formats: "
        + "; ".join(f"{k}: {v}" for k, (v, _) in sorted(EXPORT_FORMATS.items()))
        + ". Folder formats are written as a whole directory that appears only when complete.",
    )
    p.add_argument("trace", type=Path, help="Native trace file (.parquet).")
    p.add_argument("--format", required=True, choices=sorted(EXPORT_FORMATS), help="Output format.")
    add_output_argument(p, "--out", ENGINE_EXPORT, required=True, help="Output file or folder.")
    p.add_argument("--overwrite", action="store_true",
                   help="Replace an earlier export (a marked folder or an export file).")
    add_progress_arguments(p)
    p.set_defaults(func=run_export)


def run_export(args: argparse.Namespace) -> int:
    from experiments.outputs import run_directory
    from traces.importers.exports import export_trace

    out: Path = args.out
    t0 = time.perf_counter()
    from traces.io import read_trace_meta

    total = read_trace_meta(args.trace)[1]
    feedback = Feedback.from_args(args)

    def through(blocks):  # noqa: ANN001, ANN202 - Iterator[RoutingTrace]
        return feedback.tokens(blocks, total, f"trace export {args.format}")

    _, folder = EXPORT_FORMATS[args.format]
    if folder:
        with run_directory(out, args.overwrite) as tmp:
            n = export_trace(args.format, args.trace, tmp, through)
    else:
        n = export_trace(args.format, args.trace, out, through)
    print(f"wrote {out}: {n:,} tokens as {args.format} in {time.perf_counter() - t0:.1f}s")
    return 0
