"""Bottleneck adapters: parameter-efficient fine-tuning by small inserted layers (Houlsby et al., 2019).

The frozen network gets small trained layers a(h) = h + W_up GELU(W_down h + b_down) + b_up, derived
in notebook 13. W_up and b_up start at zero, so the adapted model starts exactly equal to the base
model. Unlike LoRA, adapters cannot be merged away: a little extra latency at inference.

Houlsby's placement, the default: two adapters per Transformer layer, after the attention and the
feed-forward output projections, with the LayerNorms and the task head trained too. An adapter here
follows a chosen Linear (``AdaptedLinear``), before the dropout BERT applies next (the same in eval mode).

Layers are chosen by name as in ``course_lib.lora``. In BERT, "output.dense" matches both
``encoder.layer.N.attention.output.dense`` and ``encoder.layer.N.output.dense``; the default lists
"attention.output.dense" too, for the reader. Each Linear gets at most one adapter.

Usage::

    model = BertForTokenClassification(config)
    names = add_adapters(model, AdapterConfig(bottleneck=64))   # 2 per layer, frozen elsewhere
    trainable, total = parameter_counts(model)                  # course_lib.lora.parameter_counts
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .lora import replace_linears, set_trainable


@dataclass
class AdapterConfig:
    bottleneck: int = 64  # hidden width m of each adapter
    target_modules: tuple[str, ...] = ("attention.output.dense", "output.dense")  # Linears followed by an adapter
    trainable_modules: tuple[str, ...] = ("classifier", "LayerNorm")  # left fully trainable (Houlsby's recipe)

    def __post_init__(self) -> None:
        if not (isinstance(self.bottleneck, int) and self.bottleneck >= 1):
            raise ValueError(f"bottleneck must be an integer >= 1, got {self.bottleneck!r}.")
        for field in ("target_modules", "trainable_modules"):
            if isinstance(getattr(self, field), str):
                raise ValueError(f"{field} must be a tuple of names, e.g. ({getattr(self, field)!r},).")


class BottleneckAdapter(nn.Module):
    """h + W_up GELU(W_down h): (..., d) -> (..., d), the identity at init (W_up, b_up = 0)."""

    def __init__(self, d: int, bottleneck: int = 64):
        super().__init__()
        if d < 1 or bottleneck < 1:
            raise ValueError(f"BottleneckAdapter needs d >= 1 and bottleneck >= 1, got d={d}, bottleneck={bottleneck}.")
        self.down = nn.Linear(d, bottleneck)  # W_down (m, d), b_down (m,)
        self.act = nn.GELU()
        self.up = nn.Linear(bottleneck, d)  # W_up (d, m), b_up (d,)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.up(self.act(self.down(h)))  # (..., d) -> (..., m) -> (..., d), plus the skip


class AdaptedLinear(nn.Module):
    """A frozen ``nn.Linear`` (``.base``) followed by a trainable ``BottleneckAdapter`` (``.adapter``)."""

    def __init__(self, base: nn.Linear, bottleneck: int = 64):
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise ValueError(f"AdaptedLinear wraps an nn.Linear, got {type(base).__name__}.")
        self.base = base.requires_grad_(False)
        self.adapter = BottleneckAdapter(base.out_features, bottleneck).to(base.weight.device, base.weight.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.adapter(self.base(x))  # (..., in) -> (..., out) -> (..., out)


def add_adapters(model: nn.Module, config: AdapterConfig | None = None) -> list[str]:
    """Freeze ``model``, put an adapter after each matching ``nn.Linear`` (in place) and unfreeze
    ``config.trainable_modules``. Returns the names of the adapted Linear layers."""
    config = config or AdapterConfig()
    model.requires_grad_(False)
    names = replace_linears(model, config.target_modules, lambda linear: AdaptedLinear(linear, config.bottleneck))
    set_trainable(model, config.trainable_modules)
    return names


__all__ = ["AdapterConfig", "BottleneckAdapter", "AdaptedLinear", "add_adapters"]
