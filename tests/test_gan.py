"""Tests of course_lib/gan.py: losses against their formulas, the gradient penalty against a linear
critic's known gradient, the networks' shapes and conditioning, the training loop, mode coverage."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from course_lib.data import toy_2d
from course_lib.gan import (
    LOSS_KINDS, Discriminator, GANConfig, Generator, MLPDiscriminator, MLPGenerator, discriminator_loss,
    from_unit, generate_images, generator_loss, gradient_penalty, mode_coverage, ring_centers, to_unit,
    train_gan,
)

# ----------------------------------------------------------------------------- losses


def test_bce_losses_equal_the_minimax_formulas():
    torch.manual_seed(0)
    r, f = torch.randn(50, dtype=torch.float64) * 3, torch.randn(50, dtype=torch.float64) * 3
    d_real, d_fake = torch.sigmoid(r), torch.sigmoid(f)
    expected_d = -(torch.log(d_real).mean() + torch.log(1 - d_fake).mean())
    for kind in ("saturating", "non_saturating"):
        assert torch.allclose(discriminator_loss(r, f, kind), expected_d)
    assert torch.allclose(generator_loss(f, "saturating"), torch.log(1 - d_fake).mean())
    assert torch.allclose(generator_loss(f, "non_saturating"), -torch.log(d_fake).mean())
    # stable where the naive formula is not: D certain that a fake is fake
    assert torch.isfinite(generator_loss(torch.tensor([-200.0]), "non_saturating"))
    assert generator_loss(torch.tensor([-200.0]), "non_saturating").item() == pytest.approx(200.0)


def test_saturating_loss_has_vanishing_gradient_where_d_rejects_fakes():
    # d/dlogit of G's loss at D(G(z)) = sigmoid(-10) ~ 4.5e-5: the original loss gives G no signal
    grads = {}
    for kind in ("saturating", "non_saturating"):
        f = torch.tensor([-10.0], requires_grad=True)
        generator_loss(f, kind).backward()
        grads[kind] = f.grad.item()
    assert abs(grads["saturating"]) < 1e-4
    assert grads["non_saturating"] < -0.99  # gradient -(1 - D) ~ -1 pushes the logit up
    assert grads["saturating"] < 0  # both point the same way, only the size differs


def test_least_squares_and_wasserstein_losses():
    r, f = torch.tensor([1.0, 0.5]), torch.tensor([0.0, 2.0])
    assert discriminator_loss(r, f, "least_squares").item() == pytest.approx(0.5 * (0 + 0.25) / 2 + 0.5 * (0 + 4) / 2)
    assert generator_loss(f, "least_squares").item() == pytest.approx(0.5 * (1 + 1) / 2)
    assert discriminator_loss(r, f, "wasserstein").item() == pytest.approx(f.mean() - r.mean())
    assert generator_loss(f, "wasserstein").item() == pytest.approx(-1.0)
    # logits of any shape (PatchGAN grids) are averaged over every element
    grid = torch.full((2, 1, 3, 3), 1.0)
    assert discriminator_loss(grid, grid - 1, "least_squares").item() == pytest.approx(0.0)


def test_optimal_discriminator_attains_minus_log4_plus_2js():
    # Two discrete distributions: the best D is p/(p+q); the game's value is 2 JS(p, q) - log 4.
    p = torch.tensor([0.5, 0.3, 0.2, 0.0], dtype=torch.float64)
    q = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)
    d_star = p / (p + q)
    value = (p * torch.log(d_star.clamp_min(1e-300))).sum() + (q * torch.log(1 - d_star)).sum()
    m = (p + q) / 2
    kl = lambda a, b: (a[a > 0] * torch.log(a[a > 0] / b[a > 0])).sum()  # noqa: E731
    js = 0.5 * kl(p, m) + 0.5 * kl(q, m)
    assert value.item() == pytest.approx(2 * js.item() - math.log(4))
    # the course loss on weighted samples (each support point once, weighted) gives -value at D*
    logits = torch.log(d_star.clamp_min(1e-300)) - torch.log(1 - d_star)
    loss = discriminator_loss(logits.repeat_interleave((p * 1000).round().long()),
                              logits.repeat_interleave((q * 1000).round().long()))
    assert loss.item() == pytest.approx(-value.item(), rel=1e-6)


def test_unknown_kind_is_a_clear_error():
    with pytest.raises(ValueError, match="Unknown GAN loss kind 'hinge'; choose one of saturating"):
        generator_loss(torch.zeros(2), "hinge")
    assert len(LOSS_KINDS) == 4


# ----------------------------------------------------------------------------- gradient penalty


def test_gradient_penalty_of_a_linear_critic_is_known():
    # f(x) = w . x has gradient w everywhere, so every norm is ||w|| and the penalty (||w|| - 1)^2
    torch.manual_seed(0)
    critic = nn.Sequential(nn.Flatten(), nn.Linear(12, 1))
    real, fake = torch.randn(5, 3, 2, 2), torch.randn(5, 3, 2, 2)
    gp, norms = gradient_penalty(critic, real, fake)
    w = critic[1].weight.detach().flatten()
    assert torch.allclose(norms, torch.full((5,), w.norm().item()), atol=1e-5)
    assert gp.item() == pytest.approx((w.norm().item() - 1) ** 2, rel=1e-5)
    # the penalty is differentiable w.r.t. the critic: d/dw (||w|| - 1)^2 = 2 (||w|| - 1) w / ||w||
    gp.backward()
    expected = 2 * (w.norm() - 1) * w / w.norm()
    assert torch.allclose(critic[1].weight.grad.flatten(), expected, atol=1e-5)


def test_gradient_penalty_uses_each_samples_own_gradient():
    # critic x -> sum(x^2)/2 has gradient x, so the norms are those of the interpolates themselves
    class Quadratic(nn.Module):
        def forward(self, x):
            return 0.5 * x.pow(2).flatten(1).sum(1)

    real, fake = torch.randn(6, 4), torch.randn(6, 4)
    rng = torch.Generator().manual_seed(3)
    eps = torch.rand(6, 1, generator=torch.Generator().manual_seed(3))
    _, norms = gradient_penalty(Quadratic(), real, fake, rng=rng)
    assert torch.allclose(norms, (eps * real + (1 - eps) * fake).norm(dim=1), atol=1e-6)
    with pytest.raises(ValueError, match="must match"):
        gradient_penalty(Quadratic(), real, fake[:3])


# ----------------------------------------------------------------------------- networks


def test_image_networks_shapes_ranges_and_init():
    torch.manual_seed(0)
    cfg = GANConfig(latent_dim=16, width=8)
    G, D = Generator(cfg), Discriminator(cfg)
    x = G(torch.randn(5, 16))
    assert x.shape == (5, 1, 28, 28) and x.min() >= -1 and x.max() <= 1
    assert D(x).shape == (5,)
    conv = G.net[0].weight
    assert abs(conv.std().item() - 0.02) < 0.005 and abs(conv.mean().item()) < 0.005


def test_to_unit_and_from_unit_are_inverse():
    x = torch.rand(3, 1, 28, 28)
    assert torch.allclose(to_unit(from_unit(x)), x, atol=1e-6)
    assert from_unit(torch.tensor([0.0, 1.0])).tolist() == [-1.0, 1.0]


def test_conditional_networks_use_the_label():
    torch.manual_seed(0)
    cfg = GANConfig(latent_dim=16, width=8, num_classes=10)
    G, D = Generator(cfg).eval(), Discriminator(cfg).eval()
    z = torch.randn(4, 16)
    a, b = torch.tensor([0, 1, 2, 3]), torch.tensor([5, 1, 2, 3])
    xa, xb = G(z, a), G(z, b)
    assert not torch.allclose(xa[0], xb[0]) and torch.allclose(xa[1:], xb[1:])
    da, db = D(xa, a), D(xa, b)
    assert da[0] != db[0] and torch.allclose(da[1:], db[1:])
    with pytest.raises(ValueError, match="class-conditional .* pass labels"):
        G(z)
    with pytest.raises(ValueError, match="unconditional"):
        Generator(GANConfig(latent_dim=16, width=8))(z, a)


def test_layer_norm_critic_treats_samples_independently():
    # With BatchNorm, one sample's score depends on the rest of the batch; WGAN-GP needs it not to.
    torch.manual_seed(0)
    x = torch.rand(6, 1, 28, 28) * 2 - 1
    for norm, independent in (("batch", False), ("layer", True), ("none", True)):
        D = Discriminator(GANConfig(width=8, d_norm=norm)).train()
        alone = D(x[:2])[:1]  # the first sample scored in a batch of 2 ...
        together = D(x)[:1]  # ... and in a batch of 6
        assert torch.allclose(alone, together, atol=1e-5) == independent, norm
    with pytest.raises(ValueError, match="Unknown d_norm 'group'"):
        Discriminator(GANConfig(d_norm="group"))


def test_shape_errors_are_clear():
    cfg = GANConfig(latent_dim=16, width=8)
    with pytest.raises(ValueError, match=r"Generator expects z of shape \(B, 16\), got \(4, 8\)"):
        Generator(cfg)(torch.randn(4, 8))
    with pytest.raises(ValueError, match=r"Discriminator expects images of shape \(B, 1, 28, 28\), got \(4, 784\)"):
        Discriminator(cfg)(torch.randn(4, 784))


# ----------------------------------------------------------------------------- training


def test_train_gan_moves_the_generator_onto_the_data():
    # 1D data N(3, 0.5^2); G starts near 0. After training its samples must sit near 3.
    torch.manual_seed(0)
    data = [(3 + 0.5 * torch.randn(128, 1),) for _ in range(20)]
    G, D = MLPGenerator(latent_dim=1, hidden=32, depth=2, out_dim=1), MLPDiscriminator(in_dim=1, hidden=32, depth=2)
    opt_g = torch.optim.Adam(G.parameters(), 2e-3, betas=(0.5, 0.9))
    opt_d = torch.optim.Adam(D.parameters(), 2e-3, betas=(0.5, 0.9))
    before = G(torch.randn(2000, 1)).mean().item()
    hist = train_gan(G, D, opt_g, opt_d, data, steps=300, progress=False, log_every=50)
    with torch.no_grad():
        after = G(torch.randn(2000, 1)).squeeze(1)
    assert abs(before) < 1 and abs(after.mean().item() - 3) < 0.3, (before, after.mean().item())
    assert 0.2 < after.std().item() < 1.0
    assert hist.steps("d_loss")[-1] == 299 and "grad_norm" not in hist


class Shift(nn.Module):
    """A fixed 'generator' z -> z - 3: its samples are N(-3, 1)."""

    latent_dim, num_classes = 1, 0

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, z, labels=None):
        return z - 3 + 0 * self.dummy


def test_wgan_gp_critic_estimates_the_wasserstein_distance():
    # W1(N(0, 1), N(-3, 1)) = 3, attained by the critic f(x) = x. The penalty is soft: for a critic
    # f(x) = a x the critic's loss is -3a + lam (a - 1)^2, minimised at a = 1 + 3 / (2 lam), so a
    # WGAN-GP critic with lam = 10 must settle at gradient norm 1.15 and estimate 3a = 3.45.
    torch.manual_seed(0)
    data = [torch.randn(1000, 1) for _ in range(10)]
    G, D = Shift(), MLPDiscriminator(in_dim=1, hidden=32, depth=2)
    opt_g = torch.optim.SGD(G.parameters(), lr=0.0)
    opt_d = torch.optim.Adam(D.parameters(), 1e-2, betas=(0.5, 0.9))
    hist = train_gan(G, D, opt_g, opt_d, data, steps=100, loss="wasserstein", n_critic=3, gp_weight=10.0,
                     progress=False, log_every=1)
    w_estimate = [r - f for r, f in zip(hist.values("d_real"), hist.values("d_fake"))]
    assert abs(sum(w_estimate[-20:]) / 20 - 3.45) < 0.2, w_estimate[-20:]
    assert abs(sum(hist.values("grad_norm")[-20:]) / 20 - 1.15) < 0.07
    assert w_estimate[0] < 1  # it had to learn it
    # the critic took n_critic steps per generator step
    assert opt_d.state[next(D.parameters())]["step"].item() == 300


def test_discriminator_step_does_not_touch_the_generator():
    """No gradient flows into G during D's steps (the fakes are detached): with n_critic = 3, G's parameters
    receive exactly one gradient per training step, from G's own loss, and both networks move."""
    torch.manual_seed(0)
    G, D = MLPGenerator(hidden=16, depth=1), MLPDiscriminator(hidden=16, depth=1)
    opt_g = torch.optim.SGD(G.parameters(), lr=0.1)
    opt_d = torch.optim.SGD(D.parameters(), lr=0.1)
    g_before = [p.clone() for p in G.parameters()]
    d_before = [p.clone() for p in D.parameters()]
    first = next(G.parameters())
    grads_into_g = []
    first.register_hook(lambda grad: grads_into_g.append(grad.abs().sum().item()))
    train_gan(G, D, opt_g, opt_d, [torch.randn(32, 2)], steps=3, n_critic=3, progress=False)
    assert len(grads_into_g) == 3, f"G received {len(grads_into_g)} gradients in 3 steps (D's steps leak into G)"
    assert any(not torch.equal(a, b) for a, b in zip(g_before, G.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(d_before, D.parameters()))


@pytest.mark.parametrize("gp_weight", [0.0, 10.0])
def test_train_gan_reads_the_losses_only_at_logging_steps(host_syncs, gp_weight):
    """Reading a loss waits for the GPU: train_gan checks and logs them at logging steps, not at every step."""
    def reads(steps):
        host_syncs.clear()
        torch.manual_seed(0)
        G, D = MLPGenerator(hidden=8, depth=1), MLPDiscriminator(hidden=8, depth=1)
        train_gan(G, D, torch.optim.Adam(G.parameters()), torch.optim.Adam(D.parameters()), [torch.randn(16, 2)],
                  steps=steps, n_critic=2, gp_weight=gp_weight, log_every=1000, progress=False)
        return list(host_syncs)

    few, many = reads(2), reads(12)  # each logs its first and its last step
    assert few and many == few, f"{len(many) - len(few)} more reads in 10 more steps: {many}"


def test_train_gan_on_the_fp16_path(monkeypatch):
    """fp16 autocast with a GradScaler per optimizer (older GPUs' path, run on the CPU); the gradient
    penalty's double backward runs in fp32."""
    import course_lib.gan as gan
    from course_lib.precision import Precision

    monkeypatch.setattr(gan, "precision_policy", lambda device, amp: Precision("cpu", torch.float16))
    torch.manual_seed(0)
    G, D = MLPGenerator(hidden=16, depth=1), MLPDiscriminator(hidden=16, depth=1)
    hist = train_gan(G, D, torch.optim.Adam(G.parameters(), 1e-3), torch.optim.Adam(D.parameters(), 1e-3),
                     [torch.randn(32, 2)], steps=20, loss="wasserstein", n_critic=2, gp_weight=10.0, log_every=1,
                     progress=False)
    assert all(math.isfinite(v) for v in hist.values("d_loss") + hist.values("g_loss") + hist.values("grad_norm"))
    assert all(p.dtype == torch.float32 and p.isfinite().all() for p in [*G.parameters(), *D.parameters()])


def test_conditional_training_and_generation():
    torch.manual_seed(0)
    cfg = GANConfig(latent_dim=8, width=4, num_classes=3)
    G, D = Generator(cfg), Discriminator(cfg)
    data = [(torch.rand(8, 1, 28, 28) * 2 - 1, torch.randint(0, 3, (8,)))]
    calls = []
    train_gan(G, D, torch.optim.Adam(G.parameters()), torch.optim.Adam(D.parameters()), data, steps=4,
              progress=False, callback=calls.append, callback_every=2)
    assert calls == [2, 4]
    imgs = generate_images(G, 7, labels=torch.arange(7) % 3, batch_size=3)
    assert imgs.shape == (7, 1, 28, 28) and imgs.min() >= 0 and imgs.max() <= 1 and G.training
    with pytest.raises(ValueError, match=r"generate_images: labels: expected 7 integer labels.*shape \(7,\)"):
        generate_images(G, 7, labels=torch.arange(6))


# ----------------------------------------------------------------------------- mode coverage


def test_mode_coverage_counts_modes_and_quality():
    centers = ring_centers()
    assert centers.shape == (8, 2) and torch.allclose(centers.norm(dim=1), torch.ones(8))
    ring = toy_2d("ring", 4000, generator=torch.Generator().manual_seed(0))
    full = mode_coverage(ring, centers)
    assert full["modes_covered"] == 8 and full["high_quality_fraction"] > 0.98
    g = torch.Generator().manual_seed(1)
    collapsed = mode_coverage(centers[2] + 0.05 * torch.randn(1000, 2, generator=g), centers)
    assert collapsed["modes_covered"] == 1
    far = mode_coverage(torch.randn(1000, 2, generator=g) * 0.05, centers)  # all at the origin, on no mode
    assert far["modes_covered"] == 0 and far["high_quality_fraction"] == 0.0
