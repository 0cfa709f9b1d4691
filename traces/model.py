"""MoE model geometry (docs/reference/trace-format.md) and named presets."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from traces.infra.errors import InputError
from traces.infra.jsonfile import read_json_file
from traces.infra.records import build_record


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """Geometry of a Mixture-of-Experts model as far as routing traffic is concerned."""

    name: str
    moe_layer_indices: tuple[int, ...] = field(
        metadata={"help": "Transformer layer index of every MoE layer, in order."}
    )
    num_routed_experts: int = field(metadata={"help": "Routed experts per MoE layer."})
    num_shared_experts: int = field(metadata={"help": "Shared experts (replicated, no traffic)."})
    top_k: int = field(metadata={"help": "Routed experts chosen per token per layer."})
    hidden_size: int = field(metadata={"help": "Elements in one token's hidden state."})
    num_expert_groups: int = field(default=1, metadata={"help": "Expert groups (V3 routing)."})
    topk_groups: int = field(default=1, metadata={"help": "Groups a token may use (V3)."})
    moe_intermediate_size: int = field(
        default=0, metadata={"help": "Expert FFN width; 0 means unknown (compute model)."}
    )

    def __post_init__(self) -> None:
        if not self.moe_layer_indices:
            raise InputError(f"model {self.name!r}: needs at least one MoE layer")
        if list(self.moe_layer_indices) != sorted(set(self.moe_layer_indices)):
            raise InputError(f"model {self.name!r}: MoE layer indices must be increasing")
        if self.num_routed_experts < 1 or self.num_routed_experts > 65535:
            raise InputError(f"model {self.name!r}: num_routed_experts must be in 1..65535")
        if not 1 <= self.top_k <= self.num_routed_experts:
            raise InputError(
                f"model {self.name!r}: top_k={self.top_k} must be in 1..num_routed_experts"
            )
        if self.hidden_size < 1 or self.num_shared_experts < 0:
            raise InputError(f"model {self.name!r}: hidden_size >= 1 and shared experts >= 0")
        if self.num_expert_groups < 1 or self.num_routed_experts % self.num_expert_groups:
            raise InputError(
                f"model {self.name!r}: num_expert_groups must divide num_routed_experts"
            )
        if not 1 <= self.topk_groups <= self.num_expert_groups:
            raise InputError(f"model {self.name!r}: topk_groups must be in 1..num_expert_groups")

    @property
    def num_moe_layers(self) -> int:
        return len(self.moe_layer_indices)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["moe_layer_indices"] = list(self.moe_layer_indices)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "model") -> ModelSpec:
        return build_record(cls, d, where)  # type: ignore[no-any-return]


def deepseek_moe_16b() -> ModelSpec:
    """DeepSeekMoE-16B: 28 layers, layer 0 dense, 64 routed + 2 shared, top-6, hidden 2048."""
    return ModelSpec("deepseek-moe-16b", tuple(range(1, 28)), 64, 2, 6, 2048, 1, 1, 1408)


def deepseek_v2_lite() -> ModelSpec:
    """DeepSeek-V2-Lite (the ESFT traces): 26 MoE layers (1..26), 64 + 2 experts, top-6."""
    return ModelSpec("deepseek-v2-lite", tuple(range(1, 27)), 64, 2, 6, 2048, 1, 1, 1408)


def deepseek_v3() -> ModelSpec:
    """DeepSeek-V3: 61 layers, 0-2 dense, 256 routed + 1 shared, top-8, 8 groups, 4 per token."""
    return ModelSpec("deepseek-v3", tuple(range(3, 61)), 256, 1, 8, 7168, 8, 4, 2048)


def deepseek_r1() -> ModelSpec:
    """DeepSeek-R1-671B: the DeepSeek-V3 architecture."""
    return ModelSpec("deepseek-r1", tuple(range(3, 61)), 256, 1, 8, 7168, 8, 4, 2048)


MODEL_PRESETS = {
    "deepseek-moe-16b": deepseek_moe_16b,
    "deepseek-v2-lite": deepseek_v2_lite,
    "deepseek-v3": deepseek_v3,
    "deepseek-r1": deepseek_r1,
}


def model_preset(name: str) -> ModelSpec:
    """Return the named preset; the error lists the known names."""
    try:
        return MODEL_PRESETS[name]()
    except KeyError:
        raise InputError(
            f"unknown model preset {name!r}; known: {', '.join(sorted(MODEL_PRESETS))}"
        ) from None


def load_model_spec(name_or_path: str) -> ModelSpec:
    """A preset by name, or a custom geometry from a JSON file holding :class:`ModelSpec` fields.

    Example of a custom file: ``{"name": "toy", "moe_layer_indices": [1, 2], "num_routed_experts":
    16, "num_shared_experts": 0, "top_k": 2, "hidden_size": 512}``.
    """
    if name_or_path in MODEL_PRESETS:
        return model_preset(name_or_path)
    p = Path(name_or_path)
    if not p.suffix == ".json":
        model_preset(name_or_path)  # raises the error that lists the known names
    return ModelSpec.from_dict(read_json_file(p, "model spec"), str(p))
