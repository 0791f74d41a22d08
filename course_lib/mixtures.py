"""Gaussian mixture models fitted by expectation-maximization (EM).

p(x) = sum_k pi_k N(x | mu_k, Sigma_k); EM is derived in notebook 00.

Each EM step never lowers the log-likelihood (up to the ``reg`` * I added to every covariance).
Densities are computed in log space (logsumexp), so far-away points do not underflow.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch


def gaussian_log_prob(x: torch.Tensor, means: torch.Tensor, covs: torch.Tensor) -> torch.Tensor:
    """log N(x_n | mu_k, Sigma_k) for every point and component: (N, D), (K, D), (K, D, D) -> (N, K)."""
    D = x.shape[1]
    L = torch.linalg.cholesky(covs)  # (K, D, D), Sigma_k = L_k L_k^T
    diff = (x[None, :, :] - means[:, None, :]).transpose(1, 2)  # (K, D, N)
    z = torch.linalg.solve_triangular(L, diff, upper=False)  # (K, D, N), z = L^-1 (x - mu)
    maha = (z ** 2).sum(dim=1)  # (K, N) squared Mahalanobis distance
    logdet = 2 * torch.log(torch.diagonal(L, dim1=-2, dim2=-1)).sum(-1)  # (K,) log|Sigma_k|
    return (-0.5 * (D * math.log(2 * math.pi) + logdet[:, None] + maha)).T  # (N, K)


@dataclass
class GaussianMixture:
    weights: torch.Tensor  # (K,) mixing proportions pi_k, sum to 1
    means: torch.Tensor  # (K, D)
    covs: torch.Tensor  # (K, D, D)

    @property
    def n_components(self) -> int:
        return len(self.weights)

    def joint_log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log pi_k + log N(x_n | mu_k, Sigma_k): (N, D) -> (N, K)."""
        return torch.log(self.weights)[None, :] + gaussian_log_prob(x, self.means, self.covs)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x_n): (N, D) -> (N,)."""
        return torch.logsumexp(self.joint_log_prob(x), dim=1)

    def responsibilities(self, x: torch.Tensor) -> torch.Tensor:
        """r_nk = p(k | x_n): (N, D) -> (N, K), rows sum to 1."""
        return torch.softmax(self.joint_log_prob(x), dim=1)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Ancestral sampling: k ~ Categorical(pi), then x ~ N(mu_k, Sigma_k). Returns (n, D)."""
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)  # (n,)
        eps = torch.randn(n, self.means.shape[1], generator=generator, dtype=self.means.dtype)  # (n, D)
        L = torch.linalg.cholesky(self.covs)[k]  # (n, D, D)
        return self.means[k] + (L @ eps[:, :, None]).squeeze(-1)  # (n, D)

    def em_step(self, x: torch.Tensor, reg: float = 1e-6) -> GaussianMixture:
        """One EM iteration on data ``x`` (N, D); returns the updated mixture."""
        r = self.responsibilities(x)  # (N, K)   E-step
        Nk = r.sum(0) + 1e-12  # (K,)
        means = (r.T @ x) / Nk[:, None]  # (K, D)
        diff = x[None, :, :] - means[:, None, :]  # (K, N, D)
        covs = torch.einsum("nk,kni,knj->kij", r, diff, diff) / Nk[:, None, None]  # (K, D, D)
        covs = covs + reg * torch.eye(x.shape[1], dtype=x.dtype)
        return GaussianMixture(weights=Nk / Nk.sum(), means=means, covs=covs)

    @classmethod
    def init_from_data(cls, x: torch.Tensor, k: int, generator: torch.Generator | None = None) -> GaussianMixture:
        """k random data points as means, the data covariance for every component, equal weights."""
        idx = torch.randperm(len(x), generator=generator)[:k]
        cov = torch.cov(x.T).reshape(x.shape[1], x.shape[1])
        return cls(weights=torch.full((k,), 1.0 / k, dtype=x.dtype), means=x[idx].clone(),
                   covs=cov.expand(k, -1, -1).clone())


def fit_gmm(x: torch.Tensor, k: int, iters: int = 100, tol: float = 1e-6, reg: float = 1e-6,
            generator: torch.Generator | None = None) -> tuple[GaussianMixture, list[float]]:
    """Fit a k-component mixture by EM; return it and the mean log-likelihood before each step and at the end.

    Stops early once the mean log-likelihood improves by less than ``tol`` nats per point.
    """
    if x.dim() != 2:
        raise ValueError(f"fit_gmm expects data shaped (N, D), got {tuple(x.shape)}.")
    x = x.double()
    gmm = GaussianMixture.init_from_data(x, k, generator)
    history = [gmm.log_prob(x).mean().item()]
    for _ in range(iters):
        gmm = gmm.em_step(x, reg)
        history.append(gmm.log_prob(x).mean().item())
        if history[-1] - history[-2] < tol:
            break
    return gmm, history
