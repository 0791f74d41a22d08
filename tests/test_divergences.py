import math

import numpy as np
import pytest
import torch
from scipy.stats import gaussian_kde
from torch.distributions import MultivariateNormal, Normal, Uniform, kl_divergence

from course_lib.divergences import bits_per_dim, gaussian_kl, kde_log_prob, mc_mean, monte_carlo_kl


def test_gaussian_kl_matches_torch_distributions_with_broadcasting():
    g = torch.Generator().manual_seed(0)
    mu_p, mu_q = torch.randn(5, 3, generator=g, dtype=torch.float64), torch.randn(3, generator=g, dtype=torch.float64)
    var_p = torch.rand(5, 3, generator=g, dtype=torch.float64) + 0.1
    var_q = torch.rand(3, generator=g, dtype=torch.float64) + 0.1
    ours = gaussian_kl(mu_p, var_p, mu_q, var_q)
    ref = kl_divergence(Normal(mu_p, var_p.sqrt()), Normal(mu_q, var_q.sqrt()))
    assert ours.shape == (5, 3)
    assert torch.allclose(ours, ref, atol=1e-12)


def test_diagonal_gaussian_kl_is_the_sum_over_dimensions():
    mu_p, var_p = torch.tensor([0.5, -1.0, 2.0]), torch.tensor([0.3, 1.2, 0.7])
    mu_q, var_q = torch.zeros(3), torch.ones(3)
    ref = kl_divergence(MultivariateNormal(mu_p, torch.diag(var_p)), MultivariateNormal(mu_q, torch.diag(var_q)))
    assert torch.allclose(gaussian_kl(mu_p, var_p, mu_q, var_q).sum(-1), ref, atol=1e-5)


def test_gaussian_kl_properties_and_known_values():
    assert gaussian_kl(1.3, 0.4, 1.3, 0.4).item() == pytest.approx(0.0, abs=1e-7)
    # equal variances: KL = (mu_p - mu_q)^2 / (2 var)
    assert gaussian_kl(0.0, 2.0, 3.0, 2.0).item() == pytest.approx(9 / 4, rel=1e-6)
    # asymmetric in general
    assert gaussian_kl(0.0, 1.0, 0.0, 4.0).item() != pytest.approx(gaussian_kl(0.0, 4.0, 0.0, 1.0).item())
    with pytest.raises(ValueError, match="variances"):
        gaussian_kl(0.0, -1.0, 0.0, 1.0)


def test_monte_carlo_kl_agrees_with_closed_form_within_its_standard_error():
    p, q = Normal(torch.tensor(0.5, dtype=torch.float64), 0.8), Normal(torch.tensor(-0.2, dtype=torch.float64), 1.3)
    exact = kl_divergence(p, q).item()
    torch.manual_seed(0)
    small = monte_carlo_kl(p.log_prob, q.log_prob, p.sample((10_000,)))
    large = monte_carlo_kl(p.log_prob, q.log_prob, p.sample((1_000_000,)))
    assert abs(small.value - exact) < 4 * small.stderr
    assert abs(large.value - exact) < 4 * large.stderr
    assert large.stderr == pytest.approx(small.stderr / 10, rel=0.1)  # SE ~ 1/sqrt(n)
    assert large.n == 1_000_000


def test_monte_carlo_kl_is_infinite_when_q_misses_part_of_p():
    p, q = Uniform(0.0, 2.0, validate_args=False), Uniform(0.0, 1.0, validate_args=False)
    est = monte_carlo_kl(p.log_prob, q.log_prob, p.sample((1000,)))
    assert est.value == math.inf
    reverse = monte_carlo_kl(q.log_prob, p.log_prob, q.sample((1000,)))
    assert reverse.value == pytest.approx(math.log(2)) and reverse.stderr == pytest.approx(0.0, abs=1e-12)


def test_mc_mean_standard_error():
    est = mc_mean(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    assert est.value == pytest.approx(2.5)
    assert est.stderr == pytest.approx(np.std([1, 2, 3, 4], ddof=1) / 2)
    with pytest.raises(ValueError):
        mc_mean(torch.tensor([1.0]))


def test_kde_matches_scipy_in_1d():
    g = torch.Generator().manual_seed(0)
    data = torch.randn(300, generator=g, dtype=torch.float64)
    x = torch.linspace(-4, 4, 57, dtype=torch.float64)
    h = 0.3
    # scipy's kernel has covariance (factor * data std)^2: choose the factor so that it is h^2
    ref = gaussian_kde(data.numpy(), bw_method=h / data.std().item()).logpdf(x.numpy())
    assert np.allclose(kde_log_prob(x, data, h).numpy(), ref, atol=1e-10)


def test_kde_matches_a_mixture_of_isotropic_gaussians_in_2d_and_is_chunk_independent():
    g = torch.Generator().manual_seed(1)
    data = torch.randn(40, 2, generator=g, dtype=torch.float64)
    x = torch.randn(25, 2, generator=g, dtype=torch.float64) * 2
    h = 0.5
    comps = MultivariateNormal(data, h ** 2 * torch.eye(2, dtype=torch.float64))
    ref = torch.logsumexp(comps.log_prob(x[:, None, :]), dim=1) - math.log(len(data))
    assert torch.allclose(kde_log_prob(x, data, h), ref, atol=1e-10)
    assert torch.allclose(kde_log_prob(x, data, h, chunk=7), ref, atol=1e-10)


def test_kde_is_exact_and_finite_for_tiny_bandwidths_and_far_points():
    data = torch.tensor([[0.0, 0.0], [1.0, 1.0]], dtype=torch.float32)
    h = 1e-4
    # a query on a data point: log(1/2 * N(0 | 0, h^2 I)) = -log 2 - 2 log h - log(2 pi)
    expected = -math.log(2) - 2 * math.log(h) - math.log(2 * math.pi)
    assert kde_log_prob(data[1:], data, h).item() == pytest.approx(expected, rel=1e-6)
    assert torch.isfinite(kde_log_prob(torch.tensor([[500.0, -500.0]]), data, 0.1)).all()
    with pytest.raises(ValueError, match="dimensions"):
        kde_log_prob(torch.zeros(3, 3), data, 0.1)
    with pytest.raises(ValueError, match="bandwidth"):
        kde_log_prob(data, data, 0.0)


def test_bits_per_dim():
    assert bits_per_dim(784 * math.log(2), 784) == pytest.approx(1.0)
    assert bits_per_dim(torch.tensor([2 * math.log(2)]), 2).item() == pytest.approx(1.0)
