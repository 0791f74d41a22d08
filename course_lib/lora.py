"""LoRA: parameter-efficient fine-tuning with low-rank adaptation (Hu et al., 2021).

A frozen Linear W x + b becomes h = W x + b + (alpha / r) B A x, with A (r x in) and B (out x r)
trainable (derived in notebook 13). As in peft, A starts Kaiming-uniform and B at zero, so the adapted
model starts exactly equal to the base model; ``merge_lora`` folds W' = W + (alpha / r) B A back
into plain Linear layers.

Layers are chosen by name (``name_matches``): "query" matches "bert.encoder.layer.0.attention.self.query"
but not "my_query"; "attn.qkv" matches "h.0.attn.qkv" of ``course_lib.gpt.GPT``. Modules matched by
``trainable_modules`` (e.g. a new classification head, "classifier") stay fully trainable.

Usage::

    model = BertForTokenClassification(config)            # or course_lib.gpt.GPT, any nn.Module
    names = add_lora(model, LoRAConfig(r=8, alpha=16, target_modules=("query", "value"),
                                       trainable_modules=("classifier",)))
    trainable, total = parameter_counts(model)             # e.g. well under 1% trainable
    optimizer = torch.optim.AdamW(p for p in model.parameters() if p.requires_grad)
    ... train ...
    merge_lora(model)                                      # LoRALinear -> nn.Linear, in place
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import nn

from .train import count_parameters


@dataclass
class LoRAConfig:
    r: int = 8  # rank of the update B A
    alpha: float = 16.0  # the update is scaled by alpha / r
    dropout: float = 0.0  # dropout on the input of the LoRA branch only (training only)
    target_modules: tuple[str, ...] = ("query", "value")  # Linear layers to adapt (name suffixes)
    trainable_modules: tuple[str, ...] = ()  # modules left fully trainable, e.g. ("classifier",)

    def __post_init__(self) -> None:
        if not (isinstance(self.r, int) and not isinstance(self.r, bool) and self.r >= 1):  # True is an int
            raise ValueError(f"LoRA rank r must be an integer >= 1, got {self.r!r}.")
        if not self.alpha > 0:
            raise ValueError(f"alpha must be > 0 (the update is scaled by alpha / r), got {self.alpha!r}.")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}.")
        for field in ("target_modules", "trainable_modules"):
            if isinstance(getattr(self, field), str):  # ("query") is a string, not a tuple: a common slip
                raise ValueError(f"{field} must be a tuple of names, e.g. ({getattr(self, field)!r},).")


class LoRALinear(nn.Module):
    """A frozen ``nn.Linear`` (``.base``) plus a trainable low-rank update: y = base(x) + scaling * B A x.

    ``lora_A`` (r, in) and ``lora_B`` (out, r) are laid out like the weights of peft's ``lora_A`` /
    ``lora_B`` Linear layers, so they copy across one to one. They take the base's device and dtype.
    """

    def __init__(self, base: nn.Linear, r: int = 8, alpha: float = 16.0, dropout: float = 0.0):
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise ValueError(f"LoRALinear wraps an nn.Linear, got {type(base).__name__}.")
        LoRAConfig(r=r, alpha=alpha, dropout=dropout)  # validates r, alpha, dropout
        self.base = base.requires_grad_(False)
        self.r, self.scaling = r, alpha / r
        kw = dict(device=base.weight.device, dtype=base.weight.dtype)
        self.lora_A = nn.Parameter(torch.empty(r, base.in_features, **kw))  # (r, in)
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, r, **kw))  # (out, r): B A = 0 at init
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # nn.Linear's default, as in peft
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.base(x)  # (..., out)   W x + b
        z = self.dropout(x) @ self.lora_A.T  # (..., r)   A x
        return h + self.scaling * (z @ self.lora_B.T)  # (..., out)   + (alpha / r) B A x

    def merged_weight(self) -> torch.Tensor:
        """W' = W + (alpha / r) B A: (out, in)."""
        return self.base.weight + self.scaling * (self.lora_B @ self.lora_A)

    @torch.no_grad()
    def merge(self) -> nn.Linear:
        """A frozen ``nn.Linear`` computing the same function: weight W', the base's bias."""
        b = self.base
        merged = nn.Linear(b.in_features, b.out_features, bias=b.bias is not None,
                           device=b.weight.device, dtype=b.weight.dtype)
        merged.weight.copy_(self.merged_weight())
        if b.bias is not None:
            merged.bias.copy_(b.bias)
        return merged.requires_grad_(False)

    def extra_repr(self) -> str:
        return f"r={self.r}, scaling={self.scaling:g}"


def name_matches(name: str, patterns: Iterable[str]) -> bool:
    """True if a pattern equals the qualified ``name`` or its last dot-separated component(s)."""
    return any(name == p or name.endswith("." + p) for p in patterns)


def replace_linears(model: nn.Module, patterns: tuple[str, ...], wrap: Callable[[nn.Linear], nn.Module]) -> list[str]:
    """Replace every ``nn.Linear`` whose qualified name matches ``patterns`` by ``wrap(linear)``, in place.

    Each Linear is replaced at most once. Returns the replaced names; raises ValueError, listing some
    Linear layers of the model, if none matched.
    """
    linears = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    targets = [name for name in linears if name_matches(name, patterns)]
    if not targets:
        shown = ", ".join(linears[:8]) + (", ..." if len(linears) > 8 else "")
        raise ValueError(f"No nn.Linear matches target_modules={patterns}; patterns match the end of a "
                         f"qualified name. Linear layers of this model: {shown or 'none'}.")
    for name in targets:
        parent, _, child = name.rpartition(".")
        module = model.get_submodule(parent)
        setattr(module, child, wrap(getattr(module, child)))
    return targets


def set_trainable(model: nn.Module, patterns: tuple[str, ...]) -> list[str]:
    """Unfreeze the modules matching ``patterns``; returns their names (ValueError if none)."""
    names = [name for name, _ in model.named_modules() if name and name_matches(name, patterns)]
    if patterns and not names:
        raise ValueError(f"No module matches trainable_modules={patterns}; check the names in "
                         f"[name for name, _ in model.named_modules()].")
    for name in names:
        model.get_submodule(name).requires_grad_(True)
    return names


def add_lora(model: nn.Module, config: LoRAConfig | None = None) -> list[str]:
    """Freeze ``model``, replace each matching ``nn.Linear`` by a ``LoRALinear`` (in place) and unfreeze
    ``config.trainable_modules``. Returns the names of the replaced layers."""
    config = config or LoRAConfig()
    present = [name for name, m in model.named_modules() if isinstance(m, LoRALinear)]
    if present:
        raise ValueError("This model already has LoRA layers "
                         f"({', '.join(present[:4])}{', ...' if len(present) > 4 else ''}): "
                         "add_lora once per model; merge_lora(model) first to stack a new adapter on merged weights.")
    model.requires_grad_(False)
    names = replace_linears(model, config.target_modules,
                            lambda linear: LoRALinear(linear, config.r, config.alpha, config.dropout))
    set_trainable(model, config.trainable_modules)
    return names


def merge_lora(model: nn.Module) -> nn.Module:
    """Replace each ``LoRALinear`` in ``model`` by its merged, frozen ``nn.Linear``, in place; returns
    ``model`` (for a bare ``LoRALinear``, its merged layer)."""
    if isinstance(model, LoRALinear):
        return model.merge()  # nothing to replace it in: hand back the merged layer
    names = [name for name, m in model.named_modules() if isinstance(m, LoRALinear)]
    if not names:
        raise ValueError("merge_lora: this model has no LoRA layers to merge (add_lora adds them).")
    for name in names:
        parent, _, child = name.rpartition(".")
        module = model.get_submodule(parent)
        setattr(module, child, getattr(module, child).merge())
    return model


def parameter_counts(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) numbers of parameters; tied weights count once."""
    return count_parameters(model, trainable_only=True), count_parameters(model)


__all__ = ["LoRAConfig", "LoRALinear", "add_lora", "merge_lora", "parameter_counts",
           "name_matches", "replace_linears", "set_trainable"]
