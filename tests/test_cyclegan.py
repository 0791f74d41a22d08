"""Tests of course_lib/cyclegan.py: the two domains, the networks, the losses, one training step each."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from course_lib.cyclegan import (
    CycleGAN, CycleGANConfig, PatchDiscriminator, ResnetGenerator, baseline_scores, cycle_loss, dilate,
    discriminator_losses, discriminator_step, generator_losses, generator_step, identity_loss,
    make_unpaired_domains, mean_abs_error, restyle, train_cyclegan, translation_scores,
)

TINY = CycleGANConfig(g_width=4, n_res_blocks=1, d_width=4, lambda_identity=2.5)  # all terms on


class Identity(nn.Module):
    def forward(self, x):
        return x


class Invert(nn.Module):
    def forward(self, x):
        return 1.0 - x


def digits(n=6, seed=0):
    """Random sparse 'images' in [0, 1] with isolated bright pixels, so dilation visibly changes them."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 28, 28, generator=g)
    return x * (x > 0.9)


def with_generators(model, g_ab, g_ba):
    model.g_ab, model.g_ba = g_ab, g_ba
    return model


# ----------------------------------------------------------------------------- the two domains


def dilate_reference(x: np.ndarray) -> np.ndarray:
    """Max over each pixel's 3x3 neighbourhood, cut at the border: plain loops."""
    out = np.zeros_like(x)
    n, c, h, w = x.shape
    for i in range(h):
        for j in range(w):
            window = x[:, :, max(0, i - 1) : i + 2, max(0, j - 1) : j + 2]
            out[:, :, i, j] = window.max(axis=(2, 3))
    return out


def test_restyle_is_one_minus_a_3x3_dilation_and_deterministic():
    x = digits()
    expected = 1.0 - dilate_reference(x.numpy())
    assert np.allclose(restyle(x).numpy(), expected)
    assert torch.equal(restyle(x), restyle(x.clone()))
    assert 0 <= restyle(x).min() and restyle(x).max() <= 1
    # a single bright pixel becomes a dark 3x3 square on a white background; in a corner, a 2x2 one
    one = torch.zeros(1, 1, 28, 28)
    one[0, 0, 10, 10] = one[0, 0, 0, 0] = 1.0
    b = restyle(one)
    assert (b[0, 0, 9:12, 9:12] == 0).all() and (b[0, 0, 0:2, 0:2] == 0).all()
    assert (b == 0).sum() == 9 + 4 and ((b == 0) | (b == 1)).all()
    # dilation is not invertible: a full 3x3 block and its four corners both dilate to the same 5x5 block
    block, corners = torch.zeros(1, 1, 28, 28), torch.zeros(1, 1, 28, 28)
    block[0, 0, 9:12, 9:12] = 1.0
    corners[0, 0, 9:12:2, 9:12:2] = 1.0
    assert not torch.equal(block, corners) and torch.equal(restyle(block), restyle(corners))


def test_unpaired_domains_split_the_digits_and_keep_the_ground_truth_apart():
    x = digits(10)
    y = torch.arange(10)
    d = make_unpaired_domains(x, y, generator=torch.Generator().manual_seed(3))
    assert d.a.shape == (5, 1, 28, 28) and d.b.shape == (5, 1, 28, 28)
    # every digit is in exactly one domain; the labels follow their images
    used = torch.cat([d.a_labels, d.b_labels]).sort().values
    assert torch.equal(used, y)
    assert torch.equal(d.a, x[d.a_labels]) and torch.equal(d.b_sources, x[d.b_labels])
    assert torch.equal(d.b, restyle(x[d.b_labels]))
    # the same generator seed gives the same split
    again = make_unpaired_domains(x, y, generator=torch.Generator().manual_seed(3))
    assert torch.equal(again.a, d.a) and torch.equal(again.b, d.b)
    with pytest.raises(ValueError, match=r"make_unpaired_domains: labels: expected 10 integer labels.*shape \(10,\)"):
        make_unpaired_domains(x, y[:9])
    with pytest.raises(ValueError, match=r"expects images of shape \(B, 1, 28, 28\), got \(10, 28, 28\)"):
        make_unpaired_domains(x[:, 0], y)


# ----------------------------------------------------------------------------- the networks


def test_network_shapes_ranges_and_shape_errors():
    torch.manual_seed(0)
    g, d = ResnetGenerator(TINY), PatchDiscriminator(TINY)
    x = torch.rand(3, 1, 28, 28)
    out = g(x)
    assert out.shape == (3, 1, 28, 28) and 0 < out.min() and out.max() < 1
    assert d(x).shape == (3, 1, 7, 7)
    with pytest.raises(ValueError, match=r"ResnetGenerator expects images of shape \(B, 1, 28, 28\), "
                                         r"got \(3, 3, 28, 28\)"):
        g(torch.rand(3, 3, 28, 28))
    with pytest.raises(ValueError, match=r"PatchDiscriminator expects .* got \(3, 1, 32, 32\)"):
        d(torch.rand(3, 1, 32, 32))
    rgb = CycleGANConfig(channels=3, g_width=4, n_res_blocks=1, d_width=4)
    assert ResnetGenerator(rgb)(torch.rand(2, 3, 28, 28)).shape == (2, 3, 28, 28)


def test_patch_discriminator_is_local():
    """A change in one corner leaves the logits of far-away patches untouched."""
    torch.manual_seed(0)
    d = PatchDiscriminator(CycleGANConfig(d_width=4)).eval()
    for m in d.modules():  # instance norm mixes all positions; remove it to test the receptive field alone
        if isinstance(m, nn.InstanceNorm2d):
            m.forward = lambda t: t
    x = torch.rand(1, 1, 28, 28)
    x2 = x.clone()
    x2[:, :, :3, :3] += 1.0
    changed = (d(x) - d(x2)).abs()[0, 0] > 0
    assert changed[0, 0] and not changed[-1, -1]


# ----------------------------------------------------------------------------- the losses


def test_cycle_and_identity_losses_against_a_handwritten_reference():
    a, b = digits(4, 1), restyle(digits(4, 2))
    def ref(u, v):
        return float(np.abs(u.numpy() - v.numpy()).sum() / u.numel())
    assert cycle_loss(a, a) == 0
    assert abs(cycle_loss(a, 1 - a).item() - ref(a, 1 - a)) < 1e-6
    assert abs(identity_loss(b, 1 - b).item() - ref(b, 1 - b)) < 1e-6
    with pytest.raises(ValueError, match="shapes differ"):
        cycle_loss(a, a[:2])
    with pytest.raises(ValueError, match="shapes differ"):
        identity_loss(a, a[:, :, :27])


def test_cycle_loss_is_zero_for_exact_inverse_generators_and_positive_otherwise():
    torch.manual_seed(0)
    a, b = digits(4, 1), restyle(digits(4, 2))
    model = with_generators(CycleGAN(TINY), Invert(), Invert())  # each undoes the other exactly
    _, terms, (fake_a, fake_b) = generator_losses(model, a, b)
    assert terms["cycle_a"] == 0 and terms["cycle_b"] == 0
    assert torch.equal(fake_b, 1 - a) and torch.equal(fake_a, 1 - b)

    model = with_generators(CycleGAN(TINY), Invert(), Identity())  # G_ba does not undo G_ab
    _, terms, _ = generator_losses(model, a, b)
    expected = float(np.mean(np.abs((1 - a).numpy() - a.numpy())))  # |G_ba(G_ab(a)) - a| = |(1 - a) - a|
    assert terms["cycle_a"] > 0.01 and abs(terms["cycle_a"] - expected) < 1e-6
    assert abs(terms["cycle_b"] - float(np.mean(np.abs((1 - b).numpy() - b.numpy())))) < 1e-6


def test_identity_terms_and_the_total_generator_loss():
    torch.manual_seed(0)
    a, b = digits(4, 1), restyle(digits(4, 2))
    cfg = CycleGANConfig(g_width=4, n_res_blocks=1, d_width=4, lambda_cycle=7.0, lambda_identity=3.0)
    model = with_generators(CycleGAN(cfg), Identity(), Invert())
    total, terms, (fake_a, fake_b) = generator_losses(model, a, b)
    assert terms["idt_b"] == 0  # G_ab is the identity, so it keeps B images as they are
    assert abs(terms["idt_a"] - float(np.mean(np.abs(1 - 2 * a.numpy())))) < 1e-6  # |(1 - a) - a|
    # the adversarial terms: least squares, (D(fake) - 1)^2 / 2 averaged over every patch logit
    with torch.no_grad():
        gan_ab = 0.5 * ((model.d_b(a) - 1) ** 2).mean().item()
        gan_ba = 0.5 * ((model.d_a(1 - b) - 1) ** 2).mean().item()
    assert abs(terms["gan_ab"] - gan_ab) < 1e-6 and abs(terms["gan_ba"] - gan_ba) < 1e-6
    expected = gan_ab + gan_ba + 7.0 * (terms["cycle_a"] + terms["cycle_b"]) + 3.0 * (terms["idt_a"] + terms["idt_b"])
    assert abs(total.item() - expected) < 1e-5
    # switching a term off removes it from the total and from the terms
    total0, terms0, _ = generator_losses(model, a, b, lambda_cycle=0, lambda_identity=0)
    assert set(terms0) == {"gan_ab", "gan_ba"} and abs(total0.item() - gan_ab - gan_ba) < 1e-6
    with pytest.raises(ValueError, match=r"real_b\) expects images of shape"):
        generator_losses(model, a, b[:, :, :, :20])


def test_discriminator_losses_against_a_handwritten_reference():
    torch.manual_seed(0)
    model = CycleGAN(TINY)
    a, b, fa, fb = (torch.rand(3, 1, 28, 28) for _ in range(4))
    total, terms = discriminator_losses(model, a, b, fa, fb)
    with torch.no_grad():
        ref_a = 0.5 * ((model.d_a(a) - 1) ** 2).mean() + 0.5 * (model.d_a(fa) ** 2).mean()
        ref_b = 0.5 * ((model.d_b(b) - 1) ** 2).mean() + 0.5 * (model.d_b(fb) ** 2).mean()
    assert abs(terms["d_a"] - ref_a.item()) < 1e-6 and abs(terms["d_b"] - ref_b.item()) < 1e-6
    assert abs(total.item() - ref_a.item() - ref_b.item()) < 1e-5


# ----------------------------------------------------------------------------- training steps


def snapshot(module):
    return [p.detach().clone() for p in module.parameters()]


def same(before, module):
    return all(torch.equal(p0, p) for p0, p in zip(before, module.parameters()))


def test_a_generator_step_leaves_the_discriminators_alone_and_vice_versa():
    torch.manual_seed(0)
    model = CycleGAN(TINY)
    opt_g, opt_d = model.optimizers()
    a, b = torch.rand(4, 1, 28, 28), torch.rand(4, 1, 28, 28)
    d_before = snapshot(nn.ModuleList([model.d_a, model.d_b]))
    g_before = snapshot(nn.ModuleList([model.g_ab, model.g_ba]))
    terms, (fake_a, fake_b) = generator_step(model, opt_g, a, b)
    assert same(d_before, nn.ModuleList([model.d_a, model.d_b])), "the generator step changed a discriminator"
    assert not same(g_before, nn.ModuleList([model.g_ab, model.g_ba])), "the generator step changed nothing"
    assert all(p.grad is None for p in model.discriminators()), "gradients leaked into the discriminators"
    assert all(p.requires_grad for p in model.discriminators()), "discriminators left frozen"

    g_after = snapshot(nn.ModuleList([model.g_ab, model.g_ba]))
    grads_before = [p.grad.clone() for p in model.generators()]
    discriminator_step(model, opt_d, a, b, fake_a, fake_b)
    assert same(g_after, nn.ModuleList([model.g_ab, model.g_ba])), "the discriminator step changed a generator"
    assert all(torch.equal(g0, p.grad) for g0, p in zip(grads_before, model.generators())), \
        "the discriminator step sent gradients into the generators: detach the fakes"
    assert not same(d_before, nn.ModuleList([model.d_a, model.d_b]))
    assert set(terms) >= {"g_total", "gan_ab", "cycle_a", "idt_b"}


def test_train_cyclegan_runs_logs_and_rejects_unknown_options():
    torch.manual_seed(0)
    model = CycleGAN(TINY)
    a, b = digits(16, 1), restyle(digits(16, 2))
    history = train_cyclegan(model, a, b, steps=3, batch_size=4, log_every=1, progress=False,
                             generator=torch.Generator().manual_seed(0))
    assert history.steps("g_total") == [0, 1, 2]
    assert {"gan_ab", "gan_ba", "cycle_a", "cycle_b", "idt_a", "idt_b", "d_a", "d_b"} <= set(history.records)
    ablation = train_cyclegan(CycleGAN(TINY), a, b, steps=2, batch_size=4, progress=False, lambda_cycle=0)
    assert "cycle_a" not in ablation and "idt_a" in ablation
    default = train_cyclegan(CycleGAN(CycleGANConfig(g_width=4, n_res_blocks=1, d_width=4)), a, b, steps=1,
                             batch_size=4, progress=False)
    assert "cycle_a" in default and "idt_a" not in default  # identity off by default
    with pytest.raises(TypeError, match="lambda_cycle / lambda_identity"):
        train_cyclegan(CycleGAN(TINY), a, b, steps=1, lambda_cylce=0)
    with pytest.raises(ValueError, match=r"train_cyclegan \(b\) expects"):
        train_cyclegan(CycleGAN(TINY), a, b[:, :, :14], steps=1)


def test_train_cyclegan_reads_the_losses_only_at_logging_steps(host_syncs):
    """Reading a loss waits for the GPU: the loss terms stay tensors until a logging step reads them."""
    a, b = digits(8, 1), restyle(digits(8, 2))

    def reads(steps):
        host_syncs.clear()
        torch.manual_seed(0)
        train_cyclegan(CycleGAN(TINY), a, b, steps=steps, batch_size=2, log_every=1000, progress=False)
        return list(host_syncs)

    few, many = reads(2), reads(5)  # each logs its first and its last step
    assert few and many == few, f"{len(many) - len(few)} more reads in 3 more steps: {many}"


# ----------------------------------------------------------------------------- evaluation


def test_scores_of_the_exact_maps_and_of_the_baselines():
    from course_lib.data import load_mnist

    test = load_mnist("test", limit=200)
    x, y = test.x, test.y
    base = baseline_scores(x, y)
    assert base["truth"]["a2b_mae"] == 0 and base["truth"]["b2a_mae"] == 0
    assert abs(base["identity"]["a2b_mae"] - float((x - restyle(x)).abs().mean())) < 1e-6
    # undoing only the inversion leaves the strokes thick: error = mean(dilate(x) - x) in both directions
    thick = float((dilate(x) - x).mean())
    assert abs(base["inversion"]["a2b_mae"] - thick) < 1e-6 and abs(base["inversion"]["b2a_mae"] - thick) < 1e-6
    assert base["truth"]["b2a_label_accuracy"] > 0.95  # the classifier on the real digits
    assert base["identity"]["b2a_label_accuracy"] < 0.5  # it does not read inverted digits
    scores = translation_scores(restyle(x), x, x, y)
    assert scores == base["truth"]
    assert mean_abs_error(x, 1 - x) == pytest.approx(float((1 - 2 * x).abs().mean()))
