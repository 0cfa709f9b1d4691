"""``moe-netsim trace synth`` and ``trace record``: traces from the generator or from a model."""

from __future__ import annotations

import argparse
import queue
import sys
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from experiments.options import SEED_RANGE, add_number, add_option
from experiments.outputs import TRACE_FILE, add_output_argument
from experiments.progress import Feedback, add_progress_arguments
from experiments.study_trace import TraceSection
from traces.infra.errors import InputError
from traces.infra.options import Range
from traces.origin_models import OriginOptions, origins_help
from traces.synthetic.config import CURVES, FIT_DEFAULT_MODES

if TYPE_CHECKING:
    from traces import RoutingTrace
    from traces.model import ModelSpec
    from traces.synthetic import TenantSpec


def register(trace_sub: argparse._SubParsersAction) -> None:
    """Add this module's subcommands to the `trace` group."""
    _register_synth(trace_sub)
    _register_record(trace_sub)


def _register_synth(trace_sub: argparse._SubParsersAction) -> None:
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
    add_number(p, "--tokens", int, None, "Tokens to generate.", "tokens", Range(1, 2**40),
               required=True)
    add_output_argument(p, "--out", TRACE_FILE, required=True, help="Output trace (.parquet).")
    add_number(p, "--seed", int, 0, "Seed of the generator.", "", SEED_RANGE)
    add_option(p, TraceSection, "seq_len", "--seq-len", default=512)
    add_number(p, "--step-tokens", int, 4096, "Tokens per step.", "tokens", Range(1, 2**31 - 1))
    add_number(p, "--gpus", int, 8, "GPUs that origins are spread over.", "GPUs",
               Range(1, 2**20))
    add_number(p, "--gpus-per-server", int, 8, "GPUs per server, for --origins server sets.",
               "GPUs", Range(1, 2**10))
    add_option(p, OriginOptions, "origins", "--origins",
               help=origins_help().replace("the trace's recorded origins, else dp",
                                           "dp, or each --tenant on its GPUs"))
    _add_popularity_group(p)
    _add_correlation_group(p)
    _add_drift_group(p)
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
    add_number(p, "--chunk-tokens", int, 65_536, "Tokens per row group.", "tokens",
               Range(1, 2**30))
    p.add_argument("--overwrite", action="store_true", help="Replace an existing --out file.")
    add_progress_arguments(p)
    p.set_defaults(func=run_synth)


def _add_popularity_group(p: argparse.ArgumentParser) -> None:
    pop = p.add_argument_group("popularity (default: the model's calibrated preset)")
    add_option(pop, TraceSection, "zipf_exponent", "--zipf", default=None)
    pop.add_argument(
        "--curve", choices=CURVES, default=None,
        help="Rank curve: zipf, or esft (measured on real DeepSeek-V2-Lite routing).",
    )
    add_number(pop, "--curve-sd", float, None, "Spread of the esft curve's per-layer exponent"
               " (skew varies between layers).", "", Range(0, 10))
    add_number(pop, "--max-activation", float, None, "Cap on one expert's activation.", "",
               Range(0, 1, low_open=True, high_open=True))
    pop.add_argument(
        "--load-stats",
        type=Path,
        help="Load statistics to fit per-layer popularity to (instead of Zipf): SGLang"
        " logical_count .json, the .parquet of `trace import --format sglang` or a trace.",
    )


def _add_correlation_group(p: argparse.ArgumentParser) -> None:
    co = p.add_argument_group("co-activation and correlation")
    co.add_argument(
        "--fit", type=Path, default=None, metavar="TRACE",
        help="Native trace to fit popularity and co-activation (routing modes) to.",
    )
    add_number(co, "--fit-modes", int, FIT_DEFAULT_MODES, "Routing modes per layer fitted by"
               " --fit.", "modes", Range(1, 256))
    add_number(co, "--modes", int, None, "Parametric routing modes per layer (1 = no"
               " co-activation model).", "modes", Range(1, 256))
    add_number(co, "--mode-sigma", float, None, "Contrast of the modes.", "", Range(0, 100))
    add_number(co, "--token-corr", float, 0.0, "P(repeat previous token).", "",
               Range(0, 1, high_open=True))
    add_number(co, "--layer-corr", float, 0.0, "P(map previous layer).", "",
               Range(0, 1, high_open=True))


def _add_drift_group(p: argparse.ArgumentParser) -> None:
    dr = p.add_argument_group("drift over steps")
    add_number(
        dr, "--phase-change", int, [], "A new popularity phase (experts relabelled) begins at"
        " STEP (repeatable).", "steps", Range(1, 2**31 - 1), action="append", metavar="STEP")
    add_number(dr, "--drift-every", int, None, "Phase changes every N steps, each blended over"
               " N steps (gradual drift).", "steps", Range(1, 2**31 - 1), metavar="N")
    add_number(dr, "--drift-ramp", int, None, "Steps over which a phase change blends in (0 ="
               " abrupt; --drift-every: N).", "steps", Range(0, 2**31 - 1), metavar="STEPS")


def _register_record(trace_sub: argparse._SubParsersAction) -> None:
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
    add_number(r, "--seq-len", int, 512, "Tokens per sequence (window).", "tokens",
               Range(1, 2**20))
    add_number(r, "--batch", int, 4, "Sequences per forward pass.", "sequences", Range(1, 2**16))
    add_number(r, "--dp-ranks", int, None, "Record origins as data-parallel attention ranks:"
               " sequence j of a pass is served on rank j mod N (its origin GPU). Default: no"
               " origins recorded.", "ranks", Range(1, 2**20))
    add_number(r, "--max-tokens", int, None, "Stop after this many tokens.", "tokens",
               Range(1, 2**40))
    add_number(r, "--seed", int, 0, "Seed of random weights (--config).", "", SEED_RANGE)
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


def _check_sizes(args: argparse.Namespace, model: ModelSpec) -> None:
    """Refuse, before generating, a trace that cannot fit on the disk of --out (at least a byte
    per routed expert) or chunks that cannot fit in memory (a byte per routed expert, three
    chunks in flight: two prefetched, one being written; an origin per GPU)."""
    from traces.infra.limits import check_disk, check_memory

    per_token = model.num_moe_layers * model.top_k
    check_disk(args.tokens * per_token, args.out, f"trace synth --tokens {args.tokens}",
               "generate fewer tokens or write elsewhere")
    check_memory(3 * args.chunk_tokens * per_token + 8 * args.gpus,
                 f"trace synth --chunk-tokens {args.chunk_tokens} --gpus {args.gpus}",
                 "lower --chunk-tokens (or --gpus)")


def run_synth(args: argparse.Namespace) -> int:
    from traces.load_stats import load_load_stats
    from traces.model import load_model_spec
    from traces.origin_models import DEFAULT_MODEL, parse_origins
    from traces.origins import OriginAssigner, servers_of_gpus, with_origins
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
    _check_sizes(args, model)
    origins = parse_origins(args.origins) if args.origins else None
    if origins is not None and any(t.gpus for t in cfg.tenants):
        raise InputError("--origins: give origins either by --tenant gpus=... or by --origins,"
                         " not both")
    if origins is None and not cfg.tenants:
        origins = parse_origins(DEFAULT_MODEL)
    blocks = Feedback.from_args(args).tokens(
        _prefetch(iter_synthetic(cfg, chunk_tokens=args.chunk_tokens)), args.tokens,
        f"trace synth {model.name}",
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
    blocks = Feedback.from_args(args).tokens(blocks, args.max_tokens, "trace record")
    n = _write_new(args.out, blocks, args.overwrite)  # columns as the recorder's blocks have
    print(f"recorded {n} tokens x {loaded.spec.num_moe_layers} MoE layers to {args.out}")
    return 0
