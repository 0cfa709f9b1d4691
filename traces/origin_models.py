"""Origin models: on which GPU each token's hidden state starts (its MoE dispatch source).

A trace may record ``origin_gpu``; most imported traces do not.  An *origin model* says where
tokens start on a given cluster.  One model is chosen per command (``--origins MODEL[:ARGS]``)
or study cell (``trace.origins``); the text below is the one definition (docs/reference/
origins.md repeats it, and a test checks that every model is documented there).

``dp``  (default for traces that record no origin)
    Data-parallel attention ranks: tokens are dealt round-robin over all GPUs in trace order
    (the i-th token starts on GPU ``i mod GPUs``), so every micro-batch is spread evenly.
``seq``
    Sequences pinned to ranks: a token starts on GPU ``seq_id mod GPUs`` (every token of a
    sequence on one GPU; the rule this project used before origin models existed).
``recorded``
    The trace's own ``origin_gpu`` column; an error when the trace records none.
``tenants:SETS``
    Workloads (tenants) pinned to server subsets.  ``SETS`` lists one server set per tenant,
    separated by ``/`` (``tenants:0-3/4-7``: tenant 0 on servers 0-3, tenant 1 on 4-7).  A
    token belongs to tenant ``seq_id mod tenants``; a tenant's tokens are dealt round-robin
    over the GPUs of its servers.  One set pins the whole trace to those servers.
``pd:PREFILL/DECODE/PROMPT_TOKENS``
    Prefill/decode disaggregation: tokens at position < PROMPT_TOKENS are prefill tokens and
    start on the PREFILL servers, the others on the DECODE servers (the two sets must be
    disjoint); each kind is dealt round-robin over the GPUs of its set.

Server sets are lists of ids and ranges (``0-3,6``).  Bad names, sets outside the cluster and
overlapping prefill/decode sets are :class:`InputError`.  When the origins of a run cover fewer
than half of the cluster's GPUs, :func:`traces.origins.coverage_warning` says so (a warning,
not an error: a workload may really run on part of a cluster).

This module parses and checks models (no numpy: the command line's parsers import it);
:mod:`traces.origins` applies them to tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from traces.infra.errors import InputError
from traces.infra.options import check_options, text_option

# name -> (argument syntax, one-line meaning); the CLI help and the docs derive from it.
ORIGIN_MODELS: dict[str, tuple[str, str]] = {
    "dp": ("", "data-parallel attention: tokens dealt round-robin over all GPUs (default)"),
    "seq": ("", "sequences pinned to ranks: GPU = seq_id mod GPUs"),
    "recorded": ("", "the trace's own origin_gpu column"),
    "tenants": ("SERVERS[/SERVERS...]", "tenant seq_id mod N on its own servers"),
    "pd": ("PREFILL/DECODE/PROMPT_TOKENS", "prefill and decode on disjoint server sets"),
}
DEFAULT_MODEL = "dp"  # for traces that record no origin


def origins_help() -> str:
    """Help text of the ``--origins`` flag (from :data:`ORIGIN_MODELS`)."""
    models = "; ".join(
        f"{name}{':' + syntax if syntax else ''} ({what})"
        for name, (syntax, what) in ORIGIN_MODELS.items()
    )
    return (
        "Where tokens start (MODEL[:ARGS]): " + models + ". Default: the trace's recorded"
        " origins, else dp. See docs/reference/origins.md."
    )


@dataclass(frozen=True, slots=True)
class OriginModel:
    """A parsed origin model (``server_sets``: tenants, or (prefill, decode) for ``pd``)."""

    name: str
    server_sets: tuple[tuple[int, ...], ...] = ()
    prompt_tokens: int = 0

    @property
    def text(self) -> str:
        """The canonical ``MODEL[:ARGS]`` form (parses back to an equal model)."""
        if not self.server_sets:
            return self.name
        sets = "/".join(_set_text(s) for s in self.server_sets)
        tail = f"/{self.prompt_tokens}" if self.name == "pd" else ""
        return f"{self.name}:{sets}{tail}"


def _set_text(servers: tuple[int, ...]) -> str:
    parts: list[str] = []
    run: list[int] = []
    for s in servers:
        if run and s == run[-1] + 1:
            run.append(s)
            continue
        if run:
            parts.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
        run = [s]
    if run:
        parts.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
    return ",".join(parts)


def _server_set(text: str, where: str) -> tuple[int, ...]:
    out: list[int] = []
    for part in text.split(","):
        lo, dash, hi = part.strip().partition("-")
        try:
            a, b = int(lo), int(hi) if dash else int(lo)
        except ValueError:
            raise InputError(
                f"{where}: server set {text!r} must list ids and ranges like 0-3,6"
            ) from None
        if a < 0 or b < a:
            raise InputError(f"{where}: server range {part.strip()!r} is empty or negative")
        out.extend(range(a, b + 1))
    if len(set(out)) != len(out):
        raise InputError(f"{where}: server set {text!r} names a server twice")
    return tuple(sorted(out))


def parse_origins(text: str, where: str = "--origins") -> OriginModel:
    """``MODEL[:ARGS]`` -> :class:`OriginModel` (checked against a cluster later)."""
    if not isinstance(text, str):
        raise InputError(f"{where}: expected a string like dp or tenants:0-3/4-7")
    name, colon, args = text.strip().partition(":")
    where = f"{where} {text!r}"
    if name not in ORIGIN_MODELS:
        raise InputError(
            f"{where}: unknown origin model {name!r}; known: {', '.join(ORIGIN_MODELS)}"
        )
    syntax = ORIGIN_MODELS[name][0]
    if not syntax:
        if colon:
            raise InputError(f"{where}: {name} takes no arguments")
        return OriginModel(name)
    if not args:
        raise InputError(f"{where}: {name} needs arguments: {name}:{syntax}")
    fields = args.split("/")
    if name == "tenants":
        return OriginModel(name, tuple(_server_set(f, where) for f in fields))
    if len(fields) != 3:
        raise InputError(f"{where}: expected {name}:{syntax}")
    prefill, decode = _server_set(fields[0], where), _server_set(fields[1], where)
    both = sorted(set(prefill) & set(decode))
    if both:
        raise InputError(
            f"{where}: prefill and decode server sets overlap (server {both[0]}); they must"
            " be disjoint"
        )
    try:
        prompt = int(fields[2])
    except ValueError:
        raise InputError(f"{where}: PROMPT_TOKENS must be an integer, got {fields[2]!r}") from None
    if prompt < 0:
        raise InputError(f"{where}: PROMPT_TOKENS must be >= 0, got {prompt}")
    return OriginModel(name, (prefill, decode), prompt)


def check_cluster(model: OriginModel, num_servers: int, where: str = "--origins") -> None:
    """Every server the model names exists in a cluster of ``num_servers`` servers."""
    for servers in model.server_sets:
        bad = [s for s in servers if s >= num_servers]
        if bad:
            raise InputError(
                f"{where} {model.text!r}: server {bad[0]} is outside the cluster's servers"
                f" 0..{num_servers - 1}"
            )


def resolve_model(text: str | None, where: str = "--origins") -> OriginModel | None:
    """``None``/empty -> None (recorded origins where present, else dp); else parsed."""
    return parse_origins(text, where) if text else None


def origins_field() -> Any:
    """The origin option's one definition, as a dataclass field (``""``: the trace's recorded
    origins, else dp): ``--origins`` of every command that takes it, ``trace.origins`` of
    study files and ``RebalanceConfig.origins`` derive their default and help from it."""
    return text_option("", origins_help(), "MODEL[:ARGS]", parse_origins)


@dataclass(frozen=True, slots=True)
class OriginOptions:
    """The origin option of the commands that take nothing else of a configuration."""

    origins: str = origins_field()

    def __post_init__(self) -> None:
        check_options(self, "origin options")
