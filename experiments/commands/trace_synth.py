"""``moe-netsim trace synth`` and ``trace record``: traces from the generator or from a model."""

from __future__ import annotations

import argparse
import queue
import sys
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from experiments.outputs import TRACE_FILE, add_output_argument
from experiments.progress import Feedback, add_progress_arguments
from traces.infra.errors import InputError
from traces.origins import origins_help
from traces.synthetic.modes import FIT_DEFAULT_MODES
from traces.synthetic.popularity import CURVES

if TYPE_CHECKING:
    from traces import RoutingTrace
    from traces.model import ModelSpec
    from traces.synthetic import TenantSpec


def register(trace_sub: argparse._SubParsersAction) -> None:
    """Add this module's subcommands to the `trace` group."""
    p = trace_sub.add_parser(
        "synth",
        help="Generate a seeded synthetic trace (skewed or fitted popularity, tenants).",
        description=(
            "Generate a synthetic routing trace in the native format. Per-layer expert"
            " popularity follows the model's calibrated preset (Zipf or log-normal), or is"
            " fitted to load statistics (--load-stats) or, with co-activation, to a real trace"
            " (--fit); routing is group-limited for DeepSeek-V3/R1; popularity may drift over"
            " steps. Example: moe-netsim trace synth --model deepseek-r1 --tokens 1000000"
            " --out r1.parquet"
        ),
    )
    p.add_argument(
        "--model",
        help="Model preset (e.g. deepseek-r1) or a JSON file of custom geometry (default with"
        " --fit: the trace's).",
    )
    p.add_argument("--tokens", type=int, required=True, help="Tokens to generate.")
    add_output_argument(p, "--out", TRACE_FILE, required=True, help="Output trace (.parquet).")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seq-len", type=int, default=512, help="Tokens per sequence.")
    p.add_argument("--step-tokens", type=int, default=4096, help="Tokens per step.")
    p.add_argument("--gpus", type=int, default=8, help="GPUs that origins are spread over.")
    p.add_argument("--gpus-per-server", type=int, default=8,
                   help="GPUs per server, for --origins server sets (default 8).")
    p.add_argument("--origins", default=None, metavar="MODEL[:ARGS]",
                   help=origins_help().replace("the trace's recorded origins, else dp",
                                               "dp, or each --tenant on its GPUs"))
    pop = p.add_argument_group("popularity (default: the model's calibrated preset)")
    pop.add_argument("--zipf", type=float, default=None, help="Zipf exponent of popularity.")
    pop.add_argument(
        "--curve", choices=CURVES, default=None,
        help="Rank curve: zipf, or esft (measured on real DeepSeek-V2-Lite routing).",
    )
    pop.add_argument(
        "--curve-sd", type=float, default=None,
        help="Spread of the esft curve's per-layer exponent (skew varies between layers).",
    )
    pop.add_argument(
        "--max-activation", type=float, default=None, help="Cap on one expert's activation."
    )
    pop.add_argument(
        "--load-stats",
        type=Path,
        help="Load statistics to fit per-layer popularity to (instead of Zipf): SGLang"
        " logical_count .json, the .parquet of `trace import --format sglang` or a trace.",
    )
    co = p.add_argument_group("co-activation and correlation")
    co.add_argument(
        "--fit", type=Path, default=None, metavar="TRACE",
        help="Native trace to fit popularity and co-activation (routing modes) to.",
    )
    co.add_argument(
        "--fit-modes", type=int, default=FIT_DEFAULT_MODES,
        help=f"Routing modes per layer fitted by --fit ({FIT_DEFAULT_MODES}).",
    )
    co.add_argument(
        "--modes", type=int, default=None,
        help="Parametric routing modes per layer (1 = no co-activation model).",
    )
    co.add_argument("--mode-sigma", type=float, default=None, help="Contrast of the modes.")
    co.add_argument("--token-corr", type=float, default=0.0, help="P(repeat previous token).")
    co.add_argument("--layer-corr", type=float, default=0.0, help="P(map previous layer).")
    dr = p.add_argument_group("drift over steps")
    dr.add_argument(
        "--phase-change", type=int, action="append", default=[], metavar="STEP",
        help="A new popularity phase (experts relabelled) begins at STEP (repeatable).",
    )
    dr.add_argument(
        "--drift-every", type=int, default=None, metavar="N",
        help="Phase changes every N steps, each blended over N steps (gradual drift).",
    )
    dr.add_argument(
        "--drift-ramp", type=int, default=None, metavar="STEPS",
        help="Steps over which a phase change blends in (0 = abrupt; --drift-every: N).",
    )
    p.add_argument(
        "--tenant",
        action="append",
        default=[],
        metavar="SPEC",
        help=(
            "A workload of the mixture (repeat for several): colon-separated key=value among"
            " share=FLOAT, share_end=FLOAT (share at the last step), gpus=0-63,128-191,"
            " zipf=FLOAT, stats=FILE, fit=TRACE, name=TEXT."
            " Example: --tenant name=chat:share=3:gpus=0-127 --tenant name=code:share=1"
        ),
    )
    p.add_argument("--chunk-tokens", type=int, default=65_536, help="Tokens per row group.")
    p.add_argument("--overwrite", action="store_true", help="Replace an existing --out file.")
    add_progress_arguments(p)
    p.set_defaults(func=run_synth)

    r = trace_sub.add_parser(
        "record",
        help="Record expert routing of a Hugging Face DeepSeek-V2/V3 model over a text file.",
        description=(
            "Run a transformers DeepSeek-V2/V3 MoE model over a text file and record each MoE"
            " layer's chosen experts (needs the [record] extra: torch and transformers). No"
            " downloads: --model-dir must hold the model locally; --config builds a randomly"
            " initialised model from a config.json. Without a tokenizer in --model-dir, text"
            " is tokenised as UTF-8 bytes (ids = byte values)."
        ),
    )
    src = r.add_mutually_exclusive_group(required=True)
    src.add_argument("--model-dir", type=Path, help="Local model directory (weights + config).")
    src.add_argument("--config", type=Path, help="config.json: random weights (seeded).")
    r.add_argument("--text", type=Path, required=True, help="UTF-8 text file to run.")
    add_output_argument(r, "--out", TRACE_FILE, required=True, help="Output trace (.parquet).")
    r.add_argument("--seq-len", type=int, default=512, help="Tokens per sequence (window).")
    r.add_argument("--batch", type=int, default=4, help="Sequences per forward pass.")
    r.add_argument(
        "--dp-ranks",
        type=int,
        default=None,
        help="Record origins as data-parallel attention ranks: sequence j of a pass is served"
        " on rank j mod N (its origin GPU). Default: no origins recorded.",
    )
    r.add_argument("--max-tokens", type=int, default=None, help="Stop after this many tokens.")
    r.add_argument("--seed", type=int, default=0, help="Seed of random weights (--config).")
    r.add_argument("--no-gates", action="store_true", help="Do not store gate weights.")
    r.add_argument("--overwrite", action="store_true", help="Replace an existing --out file.")
    add_progress_arguments(r)
    r.set_defaults(func=run_record)


def _gpu_list(text: str, where: str) -> tuple[int, ...]:
    out: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        try:
            first, last = int(lo), int(hi or lo)
        except ValueError:
            raise InputError(f"{where}: gpus must look like 0-63,128-191, got {text!r}") from None
        if last < first or first < 0:  # an empty range must not mean "every GPU"
            raise InputError(f"{where}: gpus range {part!r} is reversed or negative; write"
                             " low-high")
        out.extend(range(first, last + 1))
    return tuple(out)


TENANT_KEYS = ("share", "share_end", "gpus", "zipf", "stats", "fit", "name")


def parse_tenant(
    spec: str, model: ModelSpec, fit_modes: int = FIT_DEFAULT_MODES, seed: int = 0
) -> TenantSpec:
    """``share=1:gpus=0-63:zipf=0.5:stats=FILE:name=chat`` -> :class:`TenantSpec`."""
    from traces.load_stats import load_load_stats
    from traces.synthetic import TenantSpec
    from traces.synthetic.modes import fit_modes_file

    where = f"--tenant {spec!r}"
    fields: dict[str, str] = {}
    for item in spec.split(":"):
        key, eq, value = item.partition("=")
        if not eq or key not in TENANT_KEYS:
            raise InputError(
                f"{where}: expected key=value items ({', '.join(TENANT_KEYS)})"
                f" separated by ':', got {item!r}"
            )
        fields[key] = value
    try:
        share = float(fields.get("share", "1"))
        share_end = float(fields["share_end"]) if "share_end" in fields else None
        zipf = float(fields["zipf"]) if "zipf" in fields else None
    except ValueError:
        raise InputError(f"{where}: share, share_end and zipf must be numbers") from None
    stats = load_load_stats(fields["stats"], model) if "stats" in fields else None
    fit = fit_modes_file(Path(fields["fit"]), fit_modes, seed) if "fit" in fields else None
    gpus = _gpu_list(fields["gpus"], where) if "gpus" in fields else ()
    return TenantSpec(
        share=share, gpus=gpus, zipf_exponent=zipf, load_stats=stats, name=fields.get("name", ""),
        share_end=share_end, fit=fit,
    )


def _prefetch(blocks: Iterable[RoutingTrace], depth: int = 2) -> Iterator[RoutingTrace]:
    """Produce blocks in a background thread (numpy releases the GIL) while the caller writes.

    At most ``depth`` blocks wait in the queue, so memory stays bounded.
    """
    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def produce() -> None:
        try:
            for b in blocks:
                while not stop.is_set():
                    try:
                        q.put(b, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(done)
        except BaseException as exc:  # handed to the consumer, raised there
            q.put(exc)

    t = threading.Thread(target=produce, name="synth-producer", daemon=True)
    t.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        t.join()


def _write_new(out: Path, blocks: Iterable[RoutingTrace], overwrite: bool, **kw: Any) -> int:
    """``traces.io.write_blocks`` to a path that may exist only with ``--overwrite``."""
    from traces.io import write_blocks

    if out.exists() and not overwrite:
        raise InputError(f"{out}: output exists; pass --overwrite to replace it")
    return write_blocks(out, blocks, **kw)


def _drift(args: argparse.Namespace, num_tokens: int) -> tuple[tuple[int, ...], int]:
    """(phase_steps, ramp) from --phase-change, --drift-every and --drift-ramp."""
    steps = list(args.phase_change)
    ramp = args.drift_ramp
    if args.drift_every is not None:
        if args.drift_every < 1:
            raise InputError(f"--drift-every must be >= 1 step, got {args.drift_every}")
        last = max(0, (num_tokens - 1) // args.step_tokens)
        steps += range(args.drift_every, last + 1, args.drift_every)
        ramp = args.drift_every if ramp is None else ramp
    if len(set(steps)) != len(steps):
        raise InputError("--phase-change/--drift-every: a step is given twice")
    return tuple(sorted(steps)), 0 if ramp is None else ramp


def run_synth(args: argparse.Namespace) -> int:
    from traces.load_stats import load_load_stats
    from traces.model import load_model_spec
    from traces.origins import (
        DEFAULT_MODEL,
        OriginAssigner,
        parse_origins,
        servers_of_gpus,
        with_origins,
    )
    from traces.synthetic import SynthConfig, iter_synthetic
    from traces.synthetic.modes import fit_modes_file

    if args.fit_modes < 1:
        raise InputError(f"--fit-modes must be >= 1, got {args.fit_modes}")
    fit = fit_modes_file(args.fit, args.fit_modes, args.seed) if args.fit else None
    if args.model is None and fit is None:
        raise InputError("--model is required (or --fit TRACE, whose model is used)")
    model = load_model_spec(args.model) if args.model else fit.model  # type: ignore[union-attr]
    stats = load_load_stats(args.load_stats, model) if args.load_stats else None
    phase_steps, ramp = _drift(args, args.tokens)
    cfg = SynthConfig(
        model,
        num_tokens=args.tokens,
        seq_len=args.seq_len,
        step_tokens=args.step_tokens,
        num_gpus=args.gpus,
        zipf_exponent=args.zipf,
        seed=args.seed,
        token_corr=args.token_corr,
        layer_corr=args.layer_corr,
        max_activation=args.max_activation,
        load_stats=stats,
        tenants=tuple(parse_tenant(s, model, args.fit_modes, args.seed) for s in args.tenant),
        curve=args.curve,
        curve_sd=args.curve_sd,
        modes=args.modes,
        mode_sigma=args.mode_sigma,
        fit=fit,
        phase_steps=phase_steps,
        drift_ramp_steps=ramp,
    )
    if args.chunk_tokens < 1:
        raise InputError("--chunk-tokens must be >= 1")
    origins = parse_origins(args.origins) if args.origins else None
    if origins is not None and any(t.gpus for t in cfg.tenants):
        raise InputError("--origins: give origins either by --tenant gpus=... or by --origins,"
                         " not both")
    if origins is None and not cfg.tenants:
        origins = parse_origins(DEFAULT_MODEL)
    blocks = Feedback.from_args(args).iterate(
        _prefetch(iter_synthetic(cfg, chunk_tokens=args.chunk_tokens)), args.tokens,
        f"trace synth {model.name}", "tok", weight=lambda b: b.num_tokens,
    )
    assigner = None
    if origins is not None:  # else each tenant's sequences on its own GPUs (the generator's)
        assigner = OriginAssigner(
            origins, servers_of_gpus(args.gpus, args.gpus_per_server, origins))
        blocks = with_origins(blocks, assigner)
    n = _write_new(args.out, blocks, args.overwrite, row_group_tokens=args.chunk_tokens)
    warning = assigner.warning() if assigner is not None else None
    if warning:
        print(warning, file=sys.stderr)
    print(f"wrote {n} tokens of {model.name} to {args.out}")
    return 0


def run_record(args: argparse.Namespace) -> int:
    try:
        from traces import recorder
    except ImportError as exc:  # torch or transformers missing
        raise InputError(
            f"trace record needs the [record] extra (pip install 'moe-netsim[record]'): {exc}"
        ) from None
    loaded = recorder.load_model(model_dir=args.model_dir, config_path=args.config, seed=args.seed)
    ids = recorder.tokenize_file(args.text, loaded, max_tokens=args.max_tokens)
    if args.dp_ranks is not None and args.dp_ranks < 1:
        raise InputError(f"--dp-ranks {args.dp_ranks}: must be at least 1")
    blocks = recorder.record_routing(
        loaded,
        ids,
        seq_len=args.seq_len,
        batch_sequences=args.batch,
        gates=not args.no_gates,
        dp_ranks=args.dp_ranks,
    )
    blocks = Feedback.from_args(args).iterate(
        blocks, None if args.max_tokens is None else args.max_tokens, "trace record", "tok",
        weight=lambda b: b.num_tokens,
    )
    n = _write_new(args.out, blocks, args.overwrite)  # columns as the recorder's blocks have
    print(f"recorded {n} tokens x {loaded.spec.num_moe_layers} MoE layers to {args.out}")
    return 0
