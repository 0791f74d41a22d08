"""Generative adversarial networks: DCGAN-style networks, GAN losses, the gradient penalty, a training loop.

The game (Goodfellow et al., 2014) and the DCGAN networks are taught in notebook 04, the conditional
networks and WGAN-GP in notebook 05, the least-squares loss in notebook 06.

Every loss takes D's *logits* s, never probabilities (D = sigmoid(s); ``log(sigmoid(.))`` is computed as
``-softplus(-.)``), and averages over all elements, so a PatchGAN's grid of logits works the same as one
logit per image. The ``kind`` picks the game:

    kind              discriminator (critic) minimises             generator minimises
    saturating        -log D(x) - log(1 - D(G(z)))                log(1 - D(G(z)))   (the original)
    non_saturating    same                                         -log D(G(z))       (the usual fix)
    least_squares     (s(x) - 1)^2 / 2 + s(G(z))^2 / 2            (s(G(z)) - 1)^2 / 2      (LSGAN)
    wasserstein       s(G(z)) - s(x)     (+ gradient penalty)      -s(G(z))                 (WGAN)

LSGAN: Mao et al. (2017); WGAN: Arjovsky et al. (2017), with the gradient penalty of Gulrajani et al. (2017).

The image networks follow the DCGAN rules (Radford et al., 2016) for 28x28 images in [-1, 1]. With
``num_classes > 0`` both become class-conditional: G reads a label embedding next to z, D adds a
projection term ``<embed(y), features>`` to its logit (Miyato & Koyama, 2018). For WGAN-GP the critic
must not use BatchNorm (the penalty is per sample): pass ``d_norm="layer"`` or ``"none"``.

Usage::

    G, D = Generator(GANConfig()), Discriminator(GANConfig())
    opt_g = torch.optim.Adam(G.parameters(), 2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), 2e-4, betas=(0.5, 0.999))
    history = train_gan(G, D, opt_g, opt_d, loader, steps=2_000)   # batches x in [-1, 1], or (x, y)
    images = generate_images(G, 10_000)                            # (N, 1, 28, 28) in [0, 1]
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .autoencoders import mlp
from .checks import IMAGE_SHAPE, check_choice, check_image_batch, check_labels
from .precision import precision_policy
from .train import EMA, History, eval_mode, optimizer_step, train_loop

LOSS_KINDS = ("saturating", "non_saturating", "least_squares", "wasserstein")


# ----------------------------------------------------------------------------- losses


def _check_kind(kind: str) -> str:
    return check_choice(kind, LOSS_KINDS, "GAN loss kind")


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor,
                       kind: str = "non_saturating") -> torch.Tensor:
    """The loss D (or the critic) minimises, from its outputs on a real and a fake batch."""
    if _check_kind(kind) in ("saturating", "non_saturating"):
        # -log sigmoid(r) = softplus(-r);  -log(1 - sigmoid(f)) = softplus(f)
        return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()
    if kind == "least_squares":
        return 0.5 * (real_logits - 1).pow(2).mean() + 0.5 * fake_logits.pow(2).mean()
    return fake_logits.mean() - real_logits.mean()  # wasserstein: minus the estimate of W(p_data, p_g)


def generator_loss(fake_logits: torch.Tensor, kind: str = "non_saturating") -> torch.Tensor:
    """The loss G minimises, from D's outputs on G's samples."""
    if _check_kind(kind) == "saturating":
        return -F.softplus(fake_logits).mean()  # log(1 - sigmoid(f)): flat when D rejects fakes
    if kind == "non_saturating":
        return F.softplus(-fake_logits).mean()  # -log sigmoid(f)
    if kind == "least_squares":
        return 0.5 * (fake_logits - 1).pow(2).mean()
    return -fake_logits.mean()  # wasserstein


def gradient_penalty(critic: nn.Module, real: torch.Tensor, fake: torch.Tensor, labels: torch.Tensor | None = None,
                     rng: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """WGAN-GP's penalty E[(||grad_x critic(x_hat)||_2 - 1)^2] on x_hat = eps real + (1 - eps) fake,
    eps ~ U(0, 1) per sample. Returns the penalty (differentiable w.r.t. the critic's parameters) and
    the gradient norms (B,).
    """
    if real.shape != fake.shape:
        raise ValueError(f"gradient_penalty: real {tuple(real.shape)} and fake {tuple(fake.shape)} must match.")
    shape = (real.shape[0],) + (1,) * (real.ndim - 1)  # (B, 1, 1, 1) for images, (B, 1) for points
    eps = torch.rand(shape, generator=rng, device=rng.device if rng is not None else real.device).to(real.device)
    x_hat = (eps * real.detach() + (1 - eps) * fake.detach()).requires_grad_(True)
    x_hat = x_hat.view_as(x_hat)  # a non-leaf: module hooks (torch's FlopCounterMode) fail on leaves in autograd.grad
    out = critic(x_hat) if labels is None else critic(x_hat, labels)
    (grad,) = torch.autograd.grad(out.sum(), x_hat, create_graph=True)  # each sample's own gradient
    norms = grad.flatten(1).norm(dim=1)  # (B,)
    return (norms - 1).pow(2).mean(), norms.detach()


# ----------------------------------------------------------------------------- image networks


@dataclass
class GANConfig:
    latent_dim: int = 64  # size of z
    width: int = 64  # channels after D's first conv and before G's last; the other layer has 2x
    image_channels: int = 1
    num_classes: int = 0  # > 0: class-conditional G and D
    embed_dim: int = 32  # size of G's label embedding
    d_norm: str = "batch"  # D's normalisation: "batch" (DCGAN), "layer" or "none" (WGAN-GP)


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """Generator output in [-1, 1] to an image in [0, 1]."""
    return ((x + 1) / 2).clamp(0, 1)


def from_unit(x: torch.Tensor) -> torch.Tensor:
    """Image in [0, 1] to the [-1, 1] range the networks use."""
    return x * 2 - 1


def dcgan_init(module: nn.Module) -> None:
    """DCGAN initialisation: conv and linear weights N(0, 0.02) and biases 0; BatchNorm2d / GroupNorm scales
    N(1, 0.02) and shifts 0 (BatchNorm1d and LayerNorm keep PyTorch's defaults). Use with ``model.apply``."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, (nn.BatchNorm2d, nn.GroupNorm)) and module.weight is not None:
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def _check_labels(labels: torch.Tensor | None, num_classes: int, batch: int, who: str) -> None:
    if num_classes and labels is None:
        raise ValueError(f"{who} is class-conditional (num_classes={num_classes}): pass labels of shape ({batch},).")
    if not num_classes and labels is not None:
        raise ValueError(f"{who} is unconditional (num_classes=0) but got labels; build it with num_classes > 0.")
    if labels is not None:
        check_labels(labels, batch, f"{who} labels", num_classes, values=False)  # no values read: no wait for a GPU


class Generator(nn.Module):
    """z (B, latent_dim) [+ labels (B,)] -> image (B, C, 28, 28) in [-1, 1]."""

    def __init__(self, config: GANConfig):
        super().__init__()
        self.config = config
        c, w = config.image_channels, config.width
        self.num_classes, self.latent_dim = config.num_classes, config.latent_dim
        n_in = config.latent_dim + (config.embed_dim if config.num_classes else 0)
        self.embed = nn.Embedding(config.num_classes, config.embed_dim) if config.num_classes else None
        self.project = nn.Sequential(  # (B, n_in) -> (B, 2w * 7 * 7)
            nn.Linear(n_in, 2 * w * 7 * 7, bias=False), nn.BatchNorm1d(2 * w * 7 * 7), nn.ReLU())
        self.net = nn.Sequential(
            nn.ConvTranspose2d(2 * w, w, 4, stride=2, padding=1, bias=False),  # (B, w, 14, 14)
            nn.BatchNorm2d(w), nn.ReLU(),
            nn.ConvTranspose2d(w, c, 4, stride=2, padding=1),  # (B, C, 28, 28)
            nn.Tanh())
        self.apply(dcgan_init)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if z.ndim != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"Generator expects z of shape (B, {self.latent_dim}), got {tuple(z.shape)}.")
        _check_labels(labels, self.num_classes, z.shape[0], "Generator")
        if self.embed is not None:
            z = torch.cat([z, self.embed(labels)], dim=1)  # (B, latent_dim + embed_dim)
        h = self.project(z).view(z.shape[0], 2 * self.config.width, 7, 7)  # (B, 2w, 7, 7)
        return self.net(h)  # (B, C, 28, 28)


def _norm(kind: str, channels: int, size: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "layer":
        return nn.LayerNorm([channels, size, size])  # per sample: safe with the gradient penalty
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"Unknown d_norm {kind!r}; choose 'batch', 'layer' or 'none'.")


class Discriminator(nn.Module):
    """Image (B, C, 28, 28) in [-1, 1] [+ labels (B,)] -> logit (B,) (a critic score for WGANs)."""

    def __init__(self, config: GANConfig):
        super().__init__()
        self.config = config
        c, w = config.image_channels, config.width
        self.num_classes = config.num_classes
        self.net = nn.Sequential(
            nn.Conv2d(c, w, 4, stride=2, padding=1),  # (B, w, 14, 14); no norm on D's input layer
            nn.LeakyReLU(0.2),
            nn.Conv2d(w, 2 * w, 4, stride=2, padding=1, bias=config.d_norm == "none"),  # (B, 2w, 7, 7)
            _norm(config.d_norm, 2 * w, 7),
            nn.LeakyReLU(0.2),
            nn.Flatten())  # (B, 2w * 49)
        features = 2 * w * 7 * 7
        self.out = nn.Linear(features, 1)
        self.embed = nn.Embedding(config.num_classes, features) if config.num_classes else None
        self.apply(dcgan_init)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        check_image_batch(x, "Discriminator", (self.config.image_channels, *IMAGE_SHAPE[1:]))
        _check_labels(labels, self.num_classes, x.shape[0], "Discriminator")
        h = self.net(x)  # (B, features)
        logit = self.out(h).squeeze(1)  # (B,)
        if self.embed is not None:
            logit = logit + (self.embed(labels) * h).sum(dim=1)  # projection: does h match class y?
        return logit


# ----------------------------------------------------------------------------- 2D toy networks


class MLPGenerator(nn.Module):
    """z (B, latent_dim) -> point (B, out_dim): for the 2D toy problems."""

    def __init__(self, latent_dim: int = 2, hidden: int = 128, depth: int = 3, out_dim: int = 2):
        super().__init__()
        self.latent_dim, self.num_classes = latent_dim, 0
        self.net = mlp([latent_dim, *[hidden] * depth, out_dim])

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(z)


class MLPDiscriminator(nn.Module):
    """Point (B, in_dim) -> logit (B,): for the 2D toy problems."""

    def __init__(self, in_dim: int = 2, hidden: int = 128, depth: int = 3):
        super().__init__()
        self.num_classes = 0
        self.net = mlp([in_dim, *[hidden] * depth, 1], activation=lambda: nn.LeakyReLU(0.2))

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(x).squeeze(1)


def ring_centers(n_modes: int = 8, radius: float = 1.0) -> torch.Tensor:
    """The (n_modes, 2) centres of the ring of Gaussians (``course_lib.data.toy_2d("ring", ...)``)."""
    angle = torch.arange(n_modes) * (2 * math.pi / n_modes)
    return radius * torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)


def mode_coverage(samples: torch.Tensor, centers: torch.Tensor, std: float = 0.05,
                  min_fraction: float = 0.01) -> dict[str, float]:
    """How many modes a sampler covers, and how many of its samples land on any mode.

    A sample is *high quality* when it lies within 3 std of its nearest centre; a mode is
    *covered* when at least ``min_fraction`` of all samples are high quality and nearest to it.
    """
    d = torch.cdist(samples.float(), centers.float())  # (N, K)
    dist, nearest = d.min(dim=1)  # (N,)
    good = dist < 3 * std
    counts = torch.bincount(nearest[good], minlength=centers.shape[0])  # (K,)
    return {"modes_covered": int((counts >= min_fraction * samples.shape[0]).sum()),
            "high_quality_fraction": float(good.float().mean())}


# ----------------------------------------------------------------------------- training and sampling


def _split(batch) -> tuple[torch.Tensor, torch.Tensor | None]:
    if isinstance(batch, (list, tuple)):
        return batch[0], (batch[1] if len(batch) > 1 else None)
    return batch, None


def train_gan(
    generator: nn.Module,
    discriminator: nn.Module,
    opt_g: torch.optim.Optimizer,
    opt_d: torch.optim.Optimizer,
    data: Iterable,
    *,
    steps: int,
    loss: str = "non_saturating",
    n_critic: int = 1,
    gp_weight: float = 0.0,
    device: torch.device | str | None = None,
    ema: EMA | None = None,
    amp: bool | None = None,
    **loop: Any,
) -> History:
    """Alternate ``n_critic`` discriminator steps and one generator step, ``steps`` times.

    ``data`` yields real batches in the generator's output range, as ``x`` or ``(x, labels)``;
    a conditional pair (``num_classes > 0``) uses each batch's labels for its fakes too.
    Logged: ``d_loss``, ``g_loss``, ``d_real`` / ``d_fake`` (mean D(x) as a probability for the
    BCE kinds, the mean raw score otherwise), ``grad_norm`` with the gradient penalty.
    ``ema`` (a ``course_lib.train.EMA`` of the generator) is updated after every generator step.
    ``amp``: mixed precision as ``course_lib.precision`` chooses (None), off (False) or also on a CPU (True);
    the gradient penalty is always computed in fp32. The other keywords go to ``course_lib.train.train_loop``
    (``history``, ``log_every``, ``desc``, ``progress``, ``start_step``, ``callback``, ...).
    """
    _check_kind(loss)
    device = torch.device(device) if device is not None else next(generator.parameters()).device
    generator.to(device).train()
    discriminator.to(device).train()
    conditional = getattr(generator, "num_classes", 0) > 0
    score = torch.sigmoid if loss in ("saturating", "non_saturating") else (lambda t: t)
    policy = precision_policy(device, amp)
    scaler_d, scaler_g = policy.grad_scaler(), policy.grad_scaler()  # one per optimizer (pass-throughs unless fp16)

    def fakes(n: int, labels: torch.Tensor | None) -> torch.Tensor:
        z = torch.randn(n, generator.latent_dim, device=device)  # (B, latent_dim)
        return generator(z, labels if conditional else None)

    def gan_step(batches, step, progress) -> dict[str, torch.Tensor]:
        for _ in range(n_critic):  # 1) discriminator / critic: real -> high, fake -> low
            x, y = _split(next(batches))
            y = y if conditional else None
            with policy.autocast():
                fake = fakes(x.shape[0], y).detach()  # no gradient into G during D's step
                real_out, fake_out = discriminator(x, y), discriminator(fake, y)
                d_loss = discriminator_loss(real_out, fake_out, loss)
                if gp_weight > 0:
                    with policy.fp32():
                        gp, norms = gradient_penalty(discriminator, x, fake.float(), y)
                    d_loss = d_loss + gp_weight * gp
            optimizer_step(d_loss, opt_d, scaler_d)
        with policy.autocast():
            g_loss = generator_loss(discriminator(fakes(x.shape[0], y), y), loss)  # 2) generator: fool D
        optimizer_step(g_loss, opt_g, scaler_g)  # D's parameters receive gradients too; opt_d zeroes them first
        if ema is not None:
            ema.update(generator)
        logged = {"d_loss": d_loss.detach(), "g_loss": g_loss.detach(),
                  "d_real": score(real_out.detach()).mean(), "d_fake": score(fake_out.detach()).mean()}
        if gp_weight > 0:
            logged["grad_norm"] = norms.mean()
        return logged

    return train_loop(gan_step, data, steps=steps, device=device, **{"desc": "GAN", **loop})


@torch.no_grad()
def generate_images(generator: nn.Module, n: int, labels: torch.Tensor | None = None, batch_size: int = 500,
                    rng: torch.Generator | None = None) -> torch.Tensor:
    """``n`` samples as images in [0, 1] on the CPU, (n, C, 28, 28), drawn in eval mode and in batches."""
    device = next(generator.parameters()).device
    if labels is not None:
        labels = check_labels(labels, n, "generate_images: labels", values=False)
    out = []
    with eval_mode(generator):
        for start in range(0, n, batch_size):
            b = min(batch_size, n - start)
            z = torch.randn(b, generator.latent_dim, generator=rng,
                            device=rng.device if rng is not None else "cpu").to(device)
            y = None if labels is None else labels[start:start + b].to(device)
            out.append(to_unit(generator(z, y)).float().cpu())
    return torch.cat(out)


__all__ = [
    "LOSS_KINDS", "discriminator_loss", "generator_loss", "gradient_penalty", "GANConfig", "Generator",
    "Discriminator", "MLPGenerator", "MLPDiscriminator", "dcgan_init", "to_unit", "from_unit",
    "ring_centers", "mode_coverage", "train_gan", "generate_images",
]
