"""course_lib.vae against closed forms, torch.distributions, Monte Carlo and exact quadrature."""
import math

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from course_lib.vae import (
    VAE, VAEConfig, active_units, bernoulli_log_likelihood, binarize, elbo, gaussian_kl, iwae_bound,
    iwae_nll, neg_elbo, reparameterize,
)


def small_model(input_dim=12, latent_dim=2, hidden=16, seed=0, n_layers=1, dtype=torch.float64):
    torch.manual_seed(seed)
    model = VAE(VAEConfig(input_dim=input_dim, hidden=hidden, latent_dim=latent_dim, n_layers=n_layers)).to(dtype)
    with torch.no_grad():  # a sharper decoder than the default init, so that bounds differ visibly
        model.to_logits.weight.mul_(4.0)
    return model.eval()


def binary_data(n, d, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return binarize(torch.rand(n, d, generator=g, dtype=dtype), generator=g)


def test_gaussian_kl_matches_torch_distributions():
    g = torch.Generator().manual_seed(0)
    mu = torch.randn(50, 8, generator=g, dtype=torch.float64) * 2
    logvar = torch.randn(50, 8, generator=g, dtype=torch.float64)
    reference = kl_divergence(Normal(mu, (0.5 * logvar).exp()), Normal(0.0, 1.0)).sum(-1)
    assert gaussian_kl(mu, logvar).shape == (50,)
    assert torch.allclose(gaussian_kl(mu, logvar), reference, atol=1e-12)
    assert torch.all(gaussian_kl(torch.zeros(3, 4), torch.zeros(3, 4)) == 0)  # q = p -> KL = 0


def test_gaussian_kl_matches_monte_carlo():
    mu = torch.tensor([[0.5, -1.0, 2.0, 0.0]], dtype=torch.float64)
    logvar = torch.tensor([[0.0, -1.0, 0.7, -3.0]], dtype=torch.float64)
    g = torch.Generator().manual_seed(1)
    z = reparameterize(mu.expand(200_000, -1), logvar.expand(200_000, -1), generator=g)  # (S, D)
    q = Normal(mu, (0.5 * logvar).exp())
    samples = (q.log_prob(z) - Normal(0.0, 1.0).log_prob(z)).sum(-1)  # log q(z) - log p(z), (S,)
    estimate, stderr = samples.mean(), samples.std() / math.sqrt(len(samples))
    exact = gaussian_kl(mu, logvar).item()
    assert abs(estimate.item() - exact) < 4 * stderr.item(), (estimate.item(), exact, stderr.item())


def test_elbo_reconstruction_matches_manual_bernoulli_log_likelihood():
    model = small_model(input_dim=20, latent_dim=3)
    x = binary_data(16, 20)
    terms = elbo(model, x, beta=0.5, generator=torch.Generator().manual_seed(5))
    # the same noise by hand
    mu, logvar = model.encode(x)
    eps = torch.randn(mu.shape, generator=torch.Generator().manual_seed(5), dtype=mu.dtype)
    p = torch.sigmoid(model.decode(mu + (0.5 * logvar).exp() * eps))  # pixel probabilities
    manual = (x * p.log() + (1 - x) * (1 - p).log()).sum(1)
    assert terms.recon.shape == terms.kl.shape == terms.elbo.shape == (16,)
    assert torch.allclose(terms.recon, manual, atol=1e-9)
    assert torch.allclose(terms.kl, gaussian_kl(mu, logvar), atol=1e-12)
    assert torch.allclose(terms.elbo, manual - 0.5 * terms.kl, atol=1e-9)
    assert (terms.recon < 0).all() and (terms.kl >= 0).all()


def test_bernoulli_log_likelihood_is_stable_for_extreme_logits():
    logits = torch.tensor([[200.0, -200.0]])
    assert torch.allclose(bernoulli_log_likelihood(logits, torch.tensor([[1.0, 0.0]])), torch.tensor([0.0]))
    assert torch.allclose(bernoulli_log_likelihood(logits, torch.tensor([[0.0, 1.0]])), torch.tensor([-400.0]))


def test_iwae_with_one_sample_is_the_single_sample_elbo_exactly():
    model = small_model(input_dim=20, latent_dim=3)
    x = binary_data(16, 20)
    bound = iwae_bound(model, x, k=1, generator=torch.Generator().manual_seed(3))
    mu, logvar = model.encode(x)
    z = reparameterize(mu, logvar, generator=torch.Generator().manual_seed(3))  # the same draw
    q = Normal(mu, (0.5 * logvar).exp())
    reference = (bernoulli_log_likelihood(model.decode(z), x)
                 + Normal(0.0, 1.0).log_prob(z).sum(-1) - q.log_prob(z).sum(-1))
    assert torch.allclose(bound, reference, atol=1e-9)


def test_iwae_with_one_sample_equals_the_elbo_in_expectation():
    model = small_model(input_dim=20, latent_dim=3)
    x = binary_data(8, 20)
    with torch.no_grad():
        draws = torch.stack([iwae_bound(model, x, k=1, generator=torch.Generator().manual_seed(s))
                             for s in range(2000)])
        exact_kl_elbo = torch.stack([elbo(model, x, generator=torch.Generator().manual_seed(10_000 + s)).elbo
                                     for s in range(2000)])
    diff = draws.mean(0) - exact_kl_elbo.mean(0)  # (N,)
    stderr = ((draws.var(0) + exact_kl_elbo.var(0)) / 2000).sqrt()
    assert (diff.abs() < 4 * stderr).all(), (diff, stderr)


def exact_log_likelihood(model, x, half_width=7.0, n=281):
    """log p(x) = log int p(x | z) p(z) dz by quadrature on a 2-d grid (latent_dim must be 2)."""
    t = torch.linspace(-half_width, half_width, n, dtype=torch.float64)
    z = torch.cartesian_prod(t, t)  # (G, 2)
    dz = (t[1] - t[0]) ** 2
    log_joint = bernoulli_log_likelihood(model.decode(z)[:, None, :], x[None]) \
        + Normal(0.0, 1.0).log_prob(z).sum(-1)[:, None]  # (G, N)
    return torch.logsumexp(log_joint, 0) + dz.log()  # (N,)


def test_iwae_increases_with_k_and_approaches_the_exact_log_likelihood():
    model = small_model(input_dim=12, latent_dim=2)
    x = binary_data(10, 12, seed=1)
    with torch.no_grad():
        log_px = exact_log_likelihood(model, x)  # (N,)
        means = {}
        for k in [1, 10, 100, 1000]:
            runs = torch.stack([iwae_bound(model, x, k, generator=torch.Generator().manual_seed(s)) for s in range(20)])
            means[k] = runs.mean(0)  # (N,) the bound averaged over 20 seeds
        elbo_mean = torch.stack([elbo(model, x, generator=torch.Generator().manual_seed(s)).elbo
                                 for s in range(200)]).mean(0)
    # ELBO <= L_1 (equal in expectation) < L_10 < L_100 < L_1000 <= log p(x), on average over images
    assert abs(elbo_mean.mean() - means[1].mean()) < 0.2
    assert means[10].mean() > means[1].mean() + 0.1
    assert means[100].mean() > means[10].mean() + 0.02
    assert means[1000].mean() > means[100].mean()
    excess = means[1000] - log_px  # <= 0 in expectation; here the bound is nearly tight, so ~0 up to noise
    assert excess.max() < 0.05, "a lower bound above log p(x): is the log k missing?"
    assert excess.mean().abs() < 0.02, "L_1000 should be close to log p(x) for this small model"
    assert (log_px - means[1]).mean() > 0.2, "the ELBO gap of this model should be clearly visible"
    # per image, the larger-k bound is above the ELBO
    assert (means[100] > elbo_mean).all()


def test_iwae_chunking_does_not_change_the_result():
    model = small_model(input_dim=20, latent_dim=3)
    x = binary_data(6, 20)
    a = iwae_bound(model, x, k=50, chunk=7, generator=torch.Generator().manual_seed(0))
    b = iwae_bound(model, x, k=50, chunk=1000, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(a, b, atol=1e-10)
    nll = iwae_nll(model, x, k=50, batch_size=4, chunk=7, generator=torch.Generator().manual_seed(0))
    assert math.isfinite(nll) and nll > 0


def test_reparameterization_gives_gradients_sampling_does_not():
    mu = torch.zeros(4, 3, requires_grad=True)
    logvar = torch.zeros(4, 3, requires_grad=True)
    z = reparameterize(mu, logvar, generator=torch.Generator().manual_seed(0))
    (z ** 2).sum().backward()
    assert mu.grad is not None and logvar.grad is not None
    assert mu.grad.abs().sum() > 0 and logvar.grad.abs().sum() > 0

    mu.grad = logvar.grad = None
    z = Normal(mu, (0.5 * logvar).exp()).sample()  # no path back to mu and logvar
    assert not z.requires_grad
    with pytest.raises(RuntimeError):
        (z ** 2).sum().backward()
    assert mu.grad is None and logvar.grad is None

    z = Normal(mu, (0.5 * logvar).exp()).rsample()  # torch's own reparameterized sample
    (z ** 2).sum().backward()
    assert mu.grad.abs().sum() > 0


def test_binarize_draws_bernoulli_pixels():
    p = torch.tensor([0.0, 0.1, 0.5, 0.9, 1.0]).repeat(40_000, 1)  # (40000, 5)
    b = binarize(p, generator=torch.Generator().manual_seed(0))
    assert set(b.unique().tolist()) <= {0.0, 1.0}
    assert torch.allclose(b.mean(0), p[0], atol=0.01)
    again = binarize(p, generator=torch.Generator().manual_seed(0))
    assert torch.equal(b, again)
    assert not torch.equal(b, binarize(p, generator=torch.Generator().manual_seed(1)))


def test_shapes_and_active_units():
    model = VAE(VAEConfig(input_dim=784, hidden=32, latent_dim=5, n_layers=2))
    x = binarize(torch.rand(10, 1, 28, 28), generator=torch.Generator().manual_seed(0))
    mu, logvar = model.encode(x)
    assert mu.shape == logvar.shape == (10, 5)
    assert model.decode(torch.zeros(3, 7, 5)).shape == (3, 7, 784)
    assert model.sample(4, generator=torch.Generator().manual_seed(0)).shape == (4, 784)
    stats = neg_elbo(model, x, batch_size=3)
    assert stats["neg_elbo"] == pytest.approx(stats["distortion"] + stats["rate"], rel=1e-5)
    with torch.no_grad():  # make latent dims 1 and 3 ignore the input: their mu is constant
        model.to_mu.weight[[1, 3]] = 0.0
    active = active_units(model, binarize(torch.rand(500, 784), generator=torch.Generator().manual_seed(1)),
                          threshold=1e-8)
    assert active.tolist() == [True, False, True, False, True]
