"""Mixed precision, decided in one place: which autocast dtype a device gets, and whether the
gradients need a loss scaler. Every training loop of the course uses it the same way::

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

* CUDA with compute capability >= 8.0 (A100, L4, RTX 30xx / 40xx, H100): **bf16** autocast. bf16 has
  fp32's exponent range, so no scaler is needed.
* older CUDA cards (Colab's free T4 is 7.5, V100 7.0): **fp16** autocast with a GradScaler. These
  cards say bf16 is supported, but only by emulation: bf16 convolutions leave cuDNN for slow
  fallbacks, while fp16 runs on their tensor cores.
* CPU, Apple's MPS and anything else: **fp32**. (bf16 autocast on a CPU is slower than fp32 on most
  CPUs without native bf16 units; ``enabled=True`` asks for it anyway.)

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
        """fp16's range ends at 65504 and its smallest normal number is 6e-5: gradients need scaling."""
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
        """A GradScaler that is active only when ``needs_scaler``; disabled, its ``scale`` returns the loss
        unchanged, ``unscale_`` does nothing and ``step`` is ``optimizer.step()``."""
        return torch.amp.GradScaler(self.device_type, enabled=self.needs_scaler)


def precision_policy(device: torch.device | str | None = None, enabled: bool | None = None) -> Precision:
    """The mixed-precision policy for ``device`` (default: the course's device, see ``get_device``).

    ``enabled=None`` chooses as in the module docstring; ``False`` forces fp32; ``True`` uses the
    device's choice and, on a CPU, bf16.
    """
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
