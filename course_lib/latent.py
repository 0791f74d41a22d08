"""A KL-regularised convolutional autoencoder with a spatial latent, as in latent diffusion (notebook 08b).

Latent diffusion (Rombach et al., 2022) runs diffusion on the latents of an autoencoder. Default config:
images (B, 1, 28, 28) in [0, 1] -> latents (B, 4, 7, 7), 196 numbers for 784 pixels. The decoder outputs
Bernoulli logits (``decode`` applies the sigmoid). The KL weight is tiny (1e-4; Stable Diffusion: 1e-6),
so the latents are not unit-variance; diffusion trains on ``z0 = s * mu(x)`` with the scale factor
s = 1 / std(latents) (Stable Diffusion: 0.18215), and ``decode_latents`` divides by s again.

Usage::

    model = LatentAutoencoder(LatentAEConfig())
    fit(model, optimizer, latent_ae_loss, loader, steps=2_000)       # batches: images or (images, labels)
    mu = encode_latents(model, train.x)                               # (N, 4, 7, 7), on the CPU
    s = latent_scale_factor(mu)
    z0 = s * mu                                                        # what the diffusion model learns
    images = decode_latents(model, z0_samples, scale=s)               # (N, 1, 28, 28) in [0, 1]
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .checks import check_image_batch
from .train import eval_mode
from .unet import Downsample, Upsample
from .vae import gaussian_kl, reparameterize


@dataclass
class LatentAEConfig:
    in_channels: int = 1  # image channels
    # One entry per resolution: 28, 14, 7 (the last is the latent's). Small for a CPU: (16, 32, 32) reconstructs
    # about as well after 300 steps (test MSE 0.0080 vs 0.0083) at twice the cost per step.
    channels: tuple[int, ...] = (8, 16, 32)
    latent_channels: int = 4  # channels of z; z has H / f x W / f positions, f = 2 ** (len(channels) - 1)
    groups: int = 8  # GroupNorm groups; every channel count must be divisible by it
    kl_weight: float = 1e-4  # the KL term's weight in latent_ae_loss (when not given there)

    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.channels) - 1)  # 4 for three resolutions: 28x28 -> 7x7


class Block(nn.Module):
    """GroupNorm -> SiLU -> 3x3 conv, twice, plus the input (a ResBlock without a time embedding)."""

    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.GroupNorm(groups, channels), nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1),
            nn.GroupNorm(groups, channels), nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.net(x)  # (B, C, H, W)


class LatentAutoencoder(nn.Module):
    def __init__(self, config: LatentAEConfig | None = None):
        super().__init__()
        self.config = cfg = config or LatentAEConfig()
        if not cfg.channels:
            raise ValueError("LatentAEConfig.channels needs at least one entry (the channels at full resolution).")
        for ch in cfg.channels:
            if ch % cfg.groups:
                raise ValueError(f"LatentAEConfig: {ch} channels are not divisible by groups={cfg.groups}.")
        c, z = cfg.channels, cfg.latent_channels

        enc: list[nn.Module] = [nn.Conv2d(cfg.in_channels, c[0], 3, padding=1), Block(c[0], cfg.groups)]
        for c_in, c_out in zip(c[:-1], c[1:]):  # halve H, W and change the channels, then a Block
            enc += [Downsample(c_in), nn.Conv2d(c_in, c_out, 1), Block(c_out, cfg.groups)]
        enc += [nn.GroupNorm(cfg.groups, c[-1]), nn.SiLU(), nn.Conv2d(c[-1], 2 * z, 3, padding=1)]
        self.encoder = nn.Sequential(*enc)  # (B, in, H, W) -> (B, 2z, H/f, W/f): mu and logvar side by side

        dec: list[nn.Module] = [nn.Conv2d(z, c[-1], 3, padding=1), Block(c[-1], cfg.groups)]
        for c_in, c_out in zip(c[:0:-1], c[-2::-1]):  # back up: change the channels, double H, W, a Block
            # fewer channels first, then upsample: cheaper than upsampling c_in channels
            dec += [nn.Conv2d(c_in, c_out, 1), Upsample(c_out), Block(c_out, cfg.groups)]
        dec += [nn.GroupNorm(cfg.groups, c[0]), nn.SiLU(), nn.Conv2d(c[0], cfg.in_channels, 3, padding=1)]
        self.decoder = nn.Sequential(*dec)  # (B, z, H/f, W/f) -> (B, in, H, W) logits

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """q(z | x) = N(mu, diag(exp(logvar))): x (B, C, H, W) in [0, 1] -> mu, logvar (B, z, H/f, W/f) each."""
        check_image_batch(x, "LatentAutoencoder", (self.config.in_channels, "H", "W"), self.config.downsample_factor)
        mu, logvar = self.encoder(x).chunk(2, dim=1)  # (B, z, h, w) each
        return mu, logvar.clamp(-30.0, 20.0)  # as in Stable Diffusion: keeps exp(logvar) finite

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, latent_channels, h, w) -> pixel logits (B, C, f h, f w)."""
        check_image_batch(z, "LatentAutoencoder.decode", (self.config.latent_channels, "h", "w"), what="latents")
        return self.decoder(z)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """z -> images sigmoid(logits) in [0, 1], (B, C, f h, f w)."""
        return torch.sigmoid(self.decode_logits(z))

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None):
        """Encode, draw z ~ q(z | x), decode: returns logits (B, C, H, W), mu, logvar (B, z, h, w)."""
        mu, logvar = self.encode(x)
        return self.decode_logits(reparameterize(mu, logvar, generator)), mu, logvar


def _images_of(batch) -> torch.Tensor:
    """The tensor itself, or the first element of an (images, labels, ...) tuple or list."""
    if isinstance(batch, (tuple, list)) and batch:
        batch = batch[0]
    if not isinstance(batch, torch.Tensor):
        raise ValueError(f"latent_ae_loss expects a batch of images (B, C, H, W) or (images, labels), "
                         f"got {type(batch)}.")
    return batch


def latent_ae_loss(model: LatentAutoencoder, batch, kl_weight: float | None = None,
                   generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(loss, {"recon", "kl", "mse"}) for ``course_lib.train.fit``: loss = recon + kl_weight * kl.

    ``batch``: images (B, C, H, W) in [0, 1], or a tuple whose first element they are. recon: BCE of the
    decoded z ~ q(z | x) summed over pixels; kl: KL(q(z | x) || N(0, I)) summed over the latent's entries;
    both in nats per image, averaged over the batch. mse: of sigmoid(logits), logged only (no gradient).
    ``kl_weight`` None: ``model.config.kl_weight``.
    """
    x = _images_of(batch)
    if x.numel() and (x.min() < 0 or x.max() > 1):
        raise ValueError(f"latent_ae_loss expects images in [0, 1], got values in [{x.min().item():.3g}, "
                         f"{x.max().item():.3g}]. (Images in [-1, 1]? Use (x + 1) / 2.)")
    kl_weight = model.config.kl_weight if kl_weight is None else kl_weight
    logits, mu, logvar = model(x, generator)
    recon = F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1).mean()
    kl = gaussian_kl(mu.flatten(1), logvar.flatten(1)).mean()  # (B,) -> mean
    mse = F.mse_loss(torch.sigmoid(logits.detach()), x)
    return recon + kl_weight * kl, {"recon": recon.detach(), "kl": kl.detach(), "mse": mse}


def _device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def encode_latents(model: LatentAutoencoder, images: torch.Tensor, batch_size: int = 500, scale: float = 1.0,
                   sample: bool = False, generator: torch.Generator | None = None) -> torch.Tensor:
    """``scale`` * mu(x) (or a draw z ~ q(z | x) if ``sample``) per image: (N, C, H, W) -> (N, z, h, w).

    In batches, in eval mode, on the model's device; the result is on the CPU.
    """
    device, out = _device_of(model), []
    with eval_mode(model):
        for start in range(0, len(images), batch_size):
            mu, logvar = model.encode(images[start:start + batch_size].to(device))
            z = reparameterize(mu, logvar, generator) if sample else mu
            out.append((scale * z).cpu())
    return torch.cat(out)


@torch.no_grad()
def decode_latents(model: LatentAutoencoder, latents: torch.Tensor, batch_size: int = 500,
                   scale: float = 1.0) -> torch.Tensor:
    """Images in [0, 1] of ``latents / scale``: (N, z, h, w) -> (N, C, H, W).

    ``scale``: the one given to ``encode_latents``. In batches, in eval mode; the result is on the CPU.
    """
    device, out = _device_of(model), []
    with eval_mode(model):
        for start in range(0, len(latents), batch_size):
            out.append(model.decode(latents[start:start + batch_size].to(device) / scale).cpu())
    return torch.cat(out)


def latent_scale_factor(latents: torch.Tensor) -> float:
    """s = 1 / std of all the entries of ``latents`` (one number, as Stable Diffusion's 0.18215)."""
    if latents.numel() < 2:
        raise ValueError("latent_scale_factor needs at least two numbers; pass the latents of many images.")
    std = latents.float().std().item()
    if not std > 0:
        raise ValueError(f"The latents have std {std}; a scale factor needs latents that vary "
                         "(is the encoder trained?).")
    return 1.0 / std


__all__ = [
    "LatentAEConfig", "LatentAutoencoder", "latent_ae_loss", "encode_latents", "decode_latents", "latent_scale_factor",
]
