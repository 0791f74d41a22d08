"""Mixed precision (Micikevicius et al., 2018), decided in one place: which autocast dtype a device
gets, and whether the gradients need a loss scaler. The formats are explained in notebook 16.
Every training loop of the course uses it the same way::

    policy = precision_policy(device)      # e.g. Precision(device_type='cuda', dtype=torch.bfloat16)
    scaler = policy.grad_scaler()          # a working GradScaler only for fp16, a pass-through otherwise
    for batch in data:
        with policy.autocast():
            loss = loss_fn(model, batch)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()      # fp16: loss x 2^k, so small gradients do not flush to zero
        scaler.unscale_(optimizer)         # true gradients again (before clipping them)
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        scaler.step(optimizer)             # fp16: skipped if a gradient overflowed (then k shrinks)
        scaler.update()

The choice:

* CUDA with compute capability >= 8.0 (A100, L4, RTX 30xx / 40xx, H100): **bf16**, no scaler needed.
* older CUDA cards (T4 7.5, V100 7.0): **fp16** with a GradScaler; they emulate bf16 slowly, while
  fp16 runs on their tensor cores.
* CPU, Apple's MPS and anything else: **fp32** (bf16 is slower on CPUs without native bf16 units);
  on a CPU ``enabled=True`` asks for bf16 anyway.

Weights, gradients and optimizer state stay fp32 in every case: autocast only changes the dtype of
the matrix products and convolutions inside its ``with`` block.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Precision:
    """How one device trains: autocast to ``dtype`` (``torch.float32``: no autocast at all)."""

    device_type: str  # "cuda", "cpu", "mps", ...
    dtype: torch.dtype

    @property
    def needs_scaler(self) -> bool:
        """True for fp16, whose small range (normal numbers 6e-5 .. 65504) needs loss scaling."""
        return self.dtype == torch.float16

    def autocast(self):
        """A context manager for the forward pass and the loss (not for ``backward``)."""
        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.dtype)

    def fp32(self):
        """A block inside ``autocast()`` that computes in fp32 again (e.g. a gradient penalty's double
        backward, whose inner gradient fp16 would need to scale on its own)."""
        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, enabled=False)

    def grad_scaler(self) -> torch.amp.GradScaler:
        """A GradScaler, active only if ``needs_scaler``; disabled, it passes loss and step through."""
        return torch.amp.GradScaler(self.device_type, enabled=self.needs_scaler)


def precision_policy(device: torch.device | str | None = None, enabled: bool | None = None) -> Precision:
    """The policy for ``device`` (default: ``get_device()``): ``enabled=None`` chooses as in the module
    docstring, ``False`` forces fp32, ``True`` also picks bf16 on a CPU."""
    if device is None:
        from .device import get_device

        device = get_device()
    device = torch.device(device)
    if enabled is False:
        return Precision(device.type, torch.float32)
    if device.type == "cuda":
        major, _minor = torch.cuda.get_device_capability(device)
        return Precision("cuda", torch.bfloat16 if major >= 8 else torch.float16)
    if device.type == "cpu" and enabled:
        return Precision("cpu", torch.bfloat16)
    return Precision(device.type, torch.float32)


__all__ = ["Precision", "precision_policy"]
