"""A variational autoencoder (VAE) for binarized images: Gaussian encoder, Bernoulli decoder.

Prior p(z) = N(0, I), encoder q(z | x) = N(mu, diag(exp(logvar))), decoder p(x | z): independent
Bernoulli pixels x in {0, 1}^input_dim, given by their logits. Log-likelihoods and bounds are in nats
per example. The model and its ELBO (Kingma & Welling, 2014) are derived in notebook 03, as is the
importance-weighted bound of ``iwae_bound`` (Burda et al., 2016): ELBO = L_1 <= L_k <= log p(x);
-L_k with k in the thousands is the usual estimate of a VAE's negative log-likelihood.

Usage::

    model = VAE(VAEConfig(hidden=512, latent_dim=32))
    x = binarize(images.flatten(1), generator=g)          # (N, 784) in {0, 1}
    terms = elbo(model, x)                                 # terms.recon, terms.kl, terms.elbo: (N,)
    loss = -terms.elbo.mean()
    nll = -iwae_bound(model, x, k=1000).mean()             # nats
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .autoencoders import mlp
from .checks import IMAGE_SHAPE

LOG_2PI = math.log(2 * math.pi)


@dataclass
class VAEConfig:
    input_dim: int = math.prod(IMAGE_SHAPE)  # 784 pixels of a flattened 28x28 image
    hidden: int = 512  # width of every hidden layer
    latent_dim: int = 32  # dimension of z
    n_layers: int = 1  # hidden layers in the encoder, and as many in the decoder


class VAE(nn.Module):
    def __init__(self, config: VAEConfig | None = None):
        super().__init__()
        self.config = config = config or VAEConfig()
        h = [config.hidden] * config.n_layers
        self.encoder = mlp([config.input_dim, *h], last_activation=True)  # x -> features
        self.to_mu = nn.Linear(config.hidden, config.latent_dim)  # features -> mu
        self.to_logvar = nn.Linear(config.hidden, config.latent_dim)  # features -> log sigma^2
        self.decoder = mlp([config.latent_dim, *h], last_activation=True)  # z -> features
        self.to_logits = nn.Linear(config.hidden, config.input_dim)  # features -> Bernoulli logits

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """q(z | x) = N(mu, diag(exp(logvar))): (N, input_dim) or (N, 1, 28, 28) -> mu, logvar (N, latent_dim)."""
        h = self.encoder(x.flatten(1))  # (N, hidden)
        return self.to_mu(h), self.to_logvar(h)  # (N, latent_dim) each

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """p(x | z): (..., latent_dim) -> Bernoulli logits (..., input_dim); sigmoid(logits) = pixel means."""
        return self.to_logits(self.decoder(z))  # (..., input_dim)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None):
        """Encode, sample z ~ q(z | x) by reparameterization, decode: returns logits, mu, logvar."""
        mu, logvar = self.encode(x)  # (N, latent_dim) each
        z = reparameterize(mu, logvar, generator)  # (N, latent_dim)
        return self.decode(z), mu, logvar  # (N, input_dim), (N, latent_dim), (N, latent_dim)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, means: bool = True) -> torch.Tensor:
        """z ~ p(z), then the decoder's pixel means sigmoid(logits) (or Bernoulli draws if
        ``means=False``): (n, input_dim)."""
        device = next(self.parameters()).device
        z = torch.randn(n, self.config.latent_dim, generator=generator, device=device)  # (n, latent_dim)
        probs = torch.sigmoid(self.decode(z))  # (n, input_dim)
        return probs if means else binarize(probs, generator)


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """z = mu + sigma * eps with eps ~ N(0, I) and sigma = exp(logvar / 2): differentiable in mu and logvar."""
    eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)  # (N, D)
    return mu + torch.exp(0.5 * logvar) * eps  # (N, D)


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, diag(sigma^2)) || N(0, I)) in closed form, summed over the last dim: (N, D) -> (N,)."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(-1)  # (N,)


def bernoulli_log_likelihood(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """log p(x | z) = sum_j [x_j log s_j + (1 - x_j) log(1 - s_j)], s = sigmoid(logits): (..., P) -> (...).
    ``logits`` and ``x`` broadcast against each other; computed stably from the logits."""
    logits, x = torch.broadcast_tensors(logits, x)  # e.g. (k, N, P) logits against (N, P) images
    return -F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)


def standard_normal_log_prob(z: torch.Tensor) -> torch.Tensor:
    """log N(z; 0, I) summed over the last dim: (..., D) -> (...)."""
    return -0.5 * (z.pow(2) + LOG_2PI).sum(-1)


class ELBOTerms(NamedTuple):
    recon: torch.Tensor  # (N,) log p(x | z), z ~ q(z | x) (one sample), nats
    kl: torch.Tensor  # (N,) KL(q(z | x) || p(z)), closed form, nats
    elbo: torch.Tensor  # (N,) recon - beta * kl (the true ELBO when beta = 1), nats


def elbo(model: VAE, x: torch.Tensor, beta: float = 1.0, generator: torch.Generator | None = None) -> ELBOTerms:
    """Per-example ELBO terms in nats for binary x (N, input_dim) or (N, 1, 28, 28).

    ELBO(x) = E_q[log p(x | z)] - beta * KL(q(z | x) || p(z)); the expectation is estimated with one
    reparameterized sample, the KL is exact. ``beta`` != 1: the beta-VAE objective (Higgins et al., 2017).
    """
    x = x.flatten(1)  # (N, input_dim)
    logits, mu, logvar = model(x, generator)  # (N, input_dim), (N, D), (N, D)
    recon = bernoulli_log_likelihood(logits, x)  # (N,)
    kl = gaussian_kl(mu, logvar)  # (N,)
    return ELBOTerms(recon=recon, kl=kl, elbo=recon - beta * kl)


def iwae_bound(model: VAE, x: torch.Tensor, k: int, chunk: int = 64,
               generator: torch.Generator | None = None) -> torch.Tensor:
    """Importance-weighted lower bound L_k on log p(x), in nats: (N, input_dim) -> (N,).

    L_k(x) = log (1/k) sum_i w_i, w_i = p(x | z_i) p(z_i) / q(z_i | x), z_i ~ q(z | x), computed in log space.
    The decoder runs on ``chunk`` samples at a time (memory ~ chunk * N * input_dim); the noise for all k
    samples is drawn first, so the result does not depend on ``chunk``. k = 1: a one-sample ELBO estimate.
    For many images use ``iwae_nll``.
    """
    x = x.flatten(1)  # (N, P)
    mu, logvar = model.encode(x)  # (N, D) each
    std = torch.exp(0.5 * logvar)  # (N, D)
    eps = torch.randn((k, *mu.shape), generator=generator, device=mu.device, dtype=mu.dtype)  # (k, N, D)
    total = torch.full((x.shape[0],), -math.inf, device=x.device, dtype=mu.dtype)  # running logsumexp, (N,)
    for start in range(0, k, chunk):
        e = eps[start : start + chunk]  # (c, N, D)
        z = mu + std * e  # (c, N, D)   z_i = mu + sigma * eps_i
        log_px_z = bernoulli_log_likelihood(model.decode(z), x)  # (c, N)   log p(x | z_i)
        log_pz = standard_normal_log_prob(z)  # (c, N)   log p(z_i)
        log_qz = -0.5 * (e.pow(2) + logvar + LOG_2PI).sum(-1)  # (c, N)   log q(z_i | x), with (z - mu) / sigma = eps
        log_w = log_px_z + log_pz - log_qz  # (c, N)
        total = torch.logaddexp(total, torch.logsumexp(log_w, dim=0))  # (N,)
    return total - math.log(k)  # (N,)   log (1/k) sum_i w_i


@torch.no_grad()
def iwae_nll(model: VAE, x: torch.Tensor, k: int, batch_size: int = 100, chunk: int = 64,
             generator: torch.Generator | None = None) -> float:
    """Mean of -L_k over the images in x, in nats, evaluated ``batch_size`` images at a time."""
    total = 0.0
    for start in range(0, x.shape[0], batch_size):
        total += -iwae_bound(model, x[start : start + batch_size], k, chunk, generator).sum().item()
    return total / x.shape[0]


@torch.no_grad()
def neg_elbo(model: VAE, x: torch.Tensor, batch_size: int = 1000,
             generator: torch.Generator | None = None) -> dict[str, float]:
    """Mean -ELBO, -recon (distortion) and KL (rate) over the images in x, in nats per image."""
    sums = {"neg_elbo": 0.0, "distortion": 0.0, "rate": 0.0}
    for start in range(0, x.shape[0], batch_size):
        t = elbo(model, x[start : start + batch_size], generator=generator)
        sums["neg_elbo"] -= t.elbo.sum().item()
        sums["distortion"] -= t.recon.sum().item()
        sums["rate"] += t.kl.sum().item()
    return {name: value / x.shape[0] for name, value in sums.items()}


def binarize(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Dynamic binarization: each pixel of x in [0, 1] becomes 1 with probability x (a Bernoulli(x) draw,
    fresh at each call). Same shape as x."""
    u = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return (u < x).to(x.dtype)


@torch.no_grad()
def active_units(model: VAE, x: torch.Tensor, threshold: float = 0.01, batch_size: int = 1000) -> torch.Tensor:
    """Which latent dims the encoder uses: Var_x(E_q[z_d | x]) > threshold (Burda et al., 2016). Returns (D,) bool."""
    mus = torch.cat([model.encode(x[s : s + batch_size])[0] for s in range(0, x.shape[0], batch_size)])  # (N, D)
    return mus.var(dim=0) > threshold  # (D,)


__all__ = [
    "VAEConfig", "VAE", "reparameterize", "gaussian_kl", "bernoulli_log_likelihood",
    "standard_normal_log_prob", "ELBOTerms", "elbo", "iwae_bound", "iwae_nll", "neg_elbo",
    "binarize", "active_units",
]
