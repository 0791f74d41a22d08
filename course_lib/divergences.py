"""KL divergences (closed form, Monte Carlo), kernel density estimates, bits per dimension (notebook 01)."""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch


def gaussian_kl(mu_p, var_p, mu_q, var_q) -> torch.Tensor:
    """KL(N(mu_p, var_p) || N(mu_q, var_q)) in nats, element-wise with broadcasting (variances, not stds).

    For diagonal Gaussians sum over the last dimension: ``gaussian_kl(...).sum(-1)``.
    """
    mu_p, var_p, mu_q, var_q = map(torch.as_tensor, (mu_p, var_p, mu_q, var_q))
    if (var_p <= 0).any() or (var_q <= 0).any():
        raise ValueError("gaussian_kl takes variances, which must be positive.")
    return 0.5 * (torch.log(var_q / var_p) + (var_p + (mu_p - mu_q) ** 2) / var_q - 1.0)


class MCEstimate(NamedTuple):
    """A Monte Carlo mean with its standard error (the std of the mean over repeated runs)."""
    value: float
    stderr: float
    n: int

    def __str__(self) -> str:
        return f"{self.value:.4f} ± {self.stderr:.4f} (n={self.n:,})"


def mc_mean(values: torch.Tensor) -> MCEstimate:
    """Mean of i.i.d. values and its standard error std/sqrt(n) (std with Bessel's correction)."""
    values = values.reshape(-1).double()
    n = values.numel()
    if n < 2:
        raise ValueError("A standard error needs at least two samples.")
    return MCEstimate(values.mean().item(), (values.std() / math.sqrt(n)).item(), n)


def monte_carlo_kl(log_p: Callable[[torch.Tensor], torch.Tensor], log_q: Callable[[torch.Tensor], torch.Tensor],
                   samples: torch.Tensor) -> MCEstimate:
    """Estimate KL(p || q) = E_p[log p(x) - log q(x)] from ``samples`` drawn from **p**.

    ``log_p`` and ``log_q`` map a batch of points to their log densities (one value per point).
    Where q has zero density at a sample of p (log q = -inf) the estimate is ``inf`` (and its
    standard error ``nan``): KL(p || q) is infinite when q misses part of p's support.
    """
    return mc_mean(log_p(samples) - log_q(samples))


def kde_log_prob(x: torch.Tensor, data: torch.Tensor, bandwidth: float, chunk: int = 2048) -> torch.Tensor:
    """log p_h(x) of a Gaussian KDE, p_h = 1/N sum_i N(data_i, h^2 I): (M, D), (N, D) -> (M,).

    1D inputs (M,), (N,) mean D = 1. Computed with logsumexp, ``chunk`` query points at a time, so
    far-away points do not underflow.
    """
    if bandwidth <= 0:
        raise ValueError(f"bandwidth must be positive, got {bandwidth}.")
    x = x[:, None] if x.dim() == 1 else x
    data = data[:, None] if data.dim() == 1 else data
    if x.shape[1] != data.shape[1]:
        raise ValueError(f"x has {x.shape[1]} dimensions but data has {data.shape[1]}.")
    N, D = data.shape
    log_norm = math.log(N) + D * math.log(bandwidth) + 0.5 * D * math.log(2 * math.pi)
    out = []
    for start in range(0, len(x), chunk):
        # exact differences, not the faster |x|^2 - 2 x.y + |y|^2, which loses precision for tiny h
        sq = torch.cdist(x[start:start + chunk], data, compute_mode="donot_use_mm_for_euclid_dist").pow(2)  # (m, N)
        out.append(torch.logsumexp(-0.5 * sq / bandwidth ** 2, dim=1) - log_norm)  # (m,)
    return torch.cat(out)


def bits_per_dim(nll_nats: float | torch.Tensor, n_dims: int):
    """Negative log-likelihood in nats per example -> bits per dimension: nll / (D ln 2)."""
    return nll_nats / (n_dims * math.log(2))
