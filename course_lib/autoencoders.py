"""Autoencoders for 28x28 images: an MLP encoder/decoder, corruptions for denoising, and PSNR.

Images are in [0, 1]. The decoder returns pixel *logits* (``decode_logits``); ``decode`` and ``forward``
apply the sigmoid and return images in [0, 1]. The loss is the binary cross-entropy (the Bernoulli
negative log-likelihood), computed from the logits, in nats per image; notebook 02 explains why.

Usage::

    from course_lib.autoencoders import AEConfig, Autoencoder, reconstruction_loss
    model = Autoencoder(AEConfig(latent_dim=32))
    loss = reconstruction_loss(model, x)                      # nats per image
    loss = reconstruction_loss(model, add_gaussian_noise(x, 0.5), target=x)   # denoising

The encoder and decoder are plain ``nn.Sequential`` stacks of ``Linear`` and ``ReLU`` layers
(``encoder.0``, ``encoder.2``, ...), so weights of a hand-built ``nn.Sequential`` with the same
layout load with ``load_state_dict``.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .checks import IMAGE_SHAPE


@dataclass
class AEConfig:
    image_shape: tuple[int, ...] = IMAGE_SHAPE  # (C, H, W) of one image
    hidden: tuple[int, ...] = (512, 256)  # widths of the encoder's hidden layers; the decoder mirrors them
    latent_dim: int = 32  # size of the code z

    @property
    def input_dim(self) -> int:
        return math.prod(self.image_shape)  # 784 for MNIST


def mlp(widths: list[int], activation: Callable[[], nn.Module] = nn.ReLU, last_activation: bool = False):
    """Linear layers between consecutive ``widths``, each followed by ``activation()`` except the last one
    (unless ``last_activation``): mlp([a, b, c]) = a->b, ReLU, b->c."""
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.Linear(n_in, n_out))
        if last_activation or i < len(widths) - 2:
            layers.append(activation())
    return nn.Sequential(*layers)


class Autoencoder(nn.Module):
    """MLP autoencoder: image -> code z -> pixel logits. The encoder's last layer is linear (z is unbounded)."""

    def __init__(self, config: AEConfig):
        super().__init__()
        self.config = config
        widths = [config.input_dim, *config.hidden, config.latent_dim]  # e.g. [784, 512, 256, 32]
        self.encoder = mlp(widths)  # 784 -> 512 -> 256 -> latent_dim
        self.decoder = mlp(widths[::-1])  # latent_dim -> 256 -> 512 -> 784 (logits)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W), or flattened (B, C*H*W), to codes (B, latent_dim)."""
        shape = tuple(self.config.image_shape)
        if x.ndim < 2 or tuple(x.shape[1:]) not in (shape, (self.config.input_dim,)):
            raise ValueError(
                f"Autoencoder.encode expects images of shape (B, {', '.join(map(str, shape))}) or "
                f"(B, {self.config.input_dim}), got {tuple(x.shape)}."
            )
        return self.encoder(x.flatten(1))  # (B, latent_dim)

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        """Codes (B, latent_dim) to pixel logits (B, C, H, W); sigmoid(logits) is the image."""
        if z.ndim != 2 or z.shape[1] != self.config.latent_dim:
            raise ValueError(
                f"Autoencoder.decode expects codes of shape (B, {self.config.latent_dim}), got {tuple(z.shape)}."
            )
        logits = self.decoder(z)  # (B, input_dim)
        return logits.view(-1, *self.config.image_shape)  # (B, C, H, W)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Codes (B, latent_dim) to images (B, C, H, W) in [0, 1]."""
        return torch.sigmoid(self.decode_logits(z))  # (B, C, H, W)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruction x_hat = decode(encode(x)), in [0, 1]. Not logits: do not pass it to a *_with_logits loss."""
        return self.decode(self.encode(x))  # (B, C, H, W)


def bce_nats(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Bernoulli NLL (BCE from logits), summed over pixels and averaged over images: nats per image."""
    return F.binary_cross_entropy_with_logits(logits, target, reduction="sum") / target.shape[0]


def reconstruction_loss(model: Autoencoder, x: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
    """BCE in nats per image between ``model``'s reconstruction of ``x`` and ``target`` (default: ``x`` itself)."""
    target = x if target is None else target
    logits = model.decode_logits(model.encode(x))  # (B, C, H, W)
    return bce_nats(logits, target.view_as(logits))


# ----------------------------------------------------------------------------- corruptions


def _rng_device(generator: torch.Generator | None, x: torch.Tensor) -> torch.device:
    """Draw on the generator's device (a CPU generator also works for CUDA tensors), else on x's."""
    return generator.device if generator is not None else x.device


def add_gaussian_noise(x: torch.Tensor, sigma: float, generator: torch.Generator | None = None,
                       clamp: bool = True) -> torch.Tensor:
    """x + sigma * eps with eps ~ N(0, I), clamped to [0, 1] unless ``clamp=False``."""
    eps = torch.randn(x.shape, generator=generator, device=_rng_device(generator, x), dtype=x.dtype).to(x.device)
    noisy = x + sigma * eps
    return noisy.clamp(0.0, 1.0) if clamp else noisy


def mask_pixels(x: torch.Tensor, p: float, generator: torch.Generator | None = None, block: int = 1) -> torch.Tensor:
    """Set a random fraction ``p`` of pixels to 0 (all channels alike), independently per image.

    With ``block > 1`` whole ``block x block`` squares on a grid are dropped instead of single
    pixels (H and W must be divisible by ``block``); the expected dropped fraction is still ``p``.
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"mask_pixels: p must be in [0, 1], got {p}.")
    if x.ndim != 4:
        raise ValueError(f"mask_pixels expects images of shape (B, C, H, W), got {tuple(x.shape)}.")
    B, _, H, W = x.shape
    if H % block or W % block:
        raise ValueError(f"mask_pixels: block={block} must divide the image size {H}x{W}.")
    u = torch.rand((B, 1, H // block, W // block), generator=generator, device=_rng_device(generator, x))
    u = u.to(x.device)  # (B, 1, H/block, W/block), one uniform draw per cell
    keep = (u >= p).to(x.dtype)  # (B, 1, H/block, W/block), 1 = keep
    keep = keep.repeat_interleave(block, dim=2).repeat_interleave(block, dim=3)  # (B, 1, H, W)
    return x * keep  # (B, C, H, W)


# ----------------------------------------------------------------------------- quality


def psnr(x_hat: torch.Tensor, x: torch.Tensor, max_val: float = 1.0, reduction: str = "mean") -> torch.Tensor:
    """Peak signal-to-noise ratio in dB, computed per image: 10 log10(max_val^2 / MSE).

    ``reduction="mean"`` averages the per-image values; ``"none"`` returns them, shape (B,). The MSE is
    floored at ``1e-10 * max_val^2``, so an image identical to its reference scores 100 dB, not inf.
    """
    if x_hat.shape != x.shape:
        raise ValueError(f"psnr: shapes differ: {tuple(x_hat.shape)} vs {tuple(x.shape)}.")
    if reduction not in ("mean", "none"):
        raise ValueError(f"psnr: reduction must be 'mean' or 'none', got {reduction!r}.")
    diff = (x_hat.double() - x.double()).flatten(1)  # (B, D), float64 for an exact-enough log
    mse = diff.pow(2).mean(dim=1).clamp(min=1e-10 * max_val**2)  # (B,)
    values = 10.0 * torch.log10(max_val**2 / mse)  # (B,)  PSNR = 10 log10(MAX^2 / MSE)
    return values.mean() if reduction == "mean" else values


__all__ = [
    "AEConfig", "Autoencoder", "mlp", "bce_nats", "reconstruction_loss",
    "add_gaussian_noise", "mask_pixels", "psnr",
]
