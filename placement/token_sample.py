"""Per-token routing handed to the strategy: which experts each token chose, and where it started.

Load statistics (counts per expert) say how often an expert is used but not which experts a
token uses *together*; under de-duplicated dispatch (a token crosses the network once per remote
server hosting any of its experts) that co-activation is what the network cost depends on.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from traces.infra.errors import InputError
from traces.origins import resolve_origins
from traces.trace import RoutingTrace


@dataclass(frozen=True, eq=False)
class TokenSample:
    """``experts[t, l, r]``: r-th routed expert of token t at MoE layer row l; ``origin_gpu[t]``:
    the GPU its hidden state starts on (recorded, or the simulator's rule where not)."""

    experts: np.ndarray  # [tokens, layers, top_k] integers
    origin_gpu: np.ndarray  # [tokens] integers

    @property
    def num_tokens(self) -> int:
        return int(self.experts.shape[0])

    @property
    def top_k(self) -> int:
        return int(self.experts.shape[2])

    def validate(self, num_layers: int, num_experts: int, num_gpus: int) -> None:
        """Raise :class:`InputError` when the sample does not fit the problem."""
        x, o = self.experts, self.origin_gpu
        if x.ndim != 3 or x.shape[0] < 1 or x.shape[2] < 1:
            raise InputError(
                f"placement: token sample must be [tokens, layers, top_k], got {list(x.shape)}"
            )
        if x.shape[1] != num_layers:
            raise InputError(
                f"placement: token sample has {x.shape[1]} MoE layers, the problem {num_layers}"
            )
        if not np.issubdtype(x.dtype, np.integer) or x.min() < 0 or x.max() >= num_experts:
            raise InputError(
                f"placement: token sample names experts outside 0..{num_experts - 1}"
            )
        if o.shape != (x.shape[0],) or not np.issubdtype(o.dtype, np.integer):
            raise InputError("placement: token sample needs one integer origin GPU per token")
        if o.min() < 0 or o.max() >= num_gpus:
            bad = int(o[(o < 0) | (o >= num_gpus)][0])
            raise InputError(
                f"placement: token sample has origin GPU {bad}, outside the cluster's GPUs"
                f" 0..{num_gpus - 1}"
            )


def token_sample(blocks: Iterable[RoutingTrace], num_gpus: int) -> TokenSample:
    """Every token's experts per MoE layer and its origin GPU (the simulator's rule)."""
    experts, origins = [], []
    for block in blocks:
        experts.append(block.experts)
        origins.append(resolve_origins(block, num_gpus))
    if not experts or sum(len(o) for o in origins) == 0:
        raise InputError("the trace has no tokens to fit co-activation on")
    return TokenSample(np.concatenate(experts), np.concatenate(origins))
