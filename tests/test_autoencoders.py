"""Tests of course_lib/autoencoders.py: model shapes and input checks, training, corruptions, PSNR."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from course_lib.autoencoders import (
    AEConfig, Autoencoder, add_gaussian_noise, bce_nats, mask_pixels, psnr, reconstruction_loss,
)

# ----------------------------------------------------------------------------- the model


def test_shapes_ranges_and_layer_layout():
    torch.manual_seed(0)
    model = Autoencoder(AEConfig(hidden=(64, 32), latent_dim=5))
    x = torch.rand(7, 1, 28, 28)
    z = model.encode(x)
    assert z.shape == (7, 5)
    assert model.decode_logits(z).shape == (7, 1, 28, 28)
    x_hat = model(x)
    assert x_hat.shape == (7, 1, 28, 28)
    assert 0 <= x_hat.min() and x_hat.max() <= 1
    assert torch.allclose(x_hat, torch.sigmoid(model.decode_logits(z)))
    # flattened input gives the same code
    assert torch.equal(model.encode(x.flatten(1)), z)
    # encoder / decoder are Linear-ReLU stacks mirroring each other, no activation at the ends
    widths = [m.out_features for m in model.encoder if isinstance(m, nn.Linear)]
    assert widths == [64, 32, 5]
    assert [m.out_features for m in model.decoder if isinstance(m, nn.Linear)] == [32, 64, 784]
    assert isinstance(model.encoder[-1], nn.Linear) and isinstance(model.decoder[-1], nn.Linear)


def test_weights_of_a_handwritten_sequential_load_and_agree():
    torch.manual_seed(1)
    enc = nn.Sequential(nn.Linear(784, 40), nn.ReLU(), nn.Linear(40, 3))
    dec = nn.Sequential(nn.Linear(3, 40), nn.ReLU(), nn.Linear(40, 784))
    model = Autoencoder(AEConfig(hidden=(40,), latent_dim=3))
    model.encoder.load_state_dict(enc.state_dict())
    model.decoder.load_state_dict(dec.state_dict())
    x = torch.rand(4, 1, 28, 28)
    expected = torch.sigmoid(dec(enc(x.flatten(1)))).view(4, 1, 28, 28)
    assert torch.allclose(model(x), expected, atol=1e-6)


def test_shape_errors_are_clear():
    model = Autoencoder(AEConfig(hidden=(16,), latent_dim=4))
    with pytest.raises(ValueError, match=r"encode expects images of shape \(B, 1, 28, 28\).*got \(2, 3, 28, 28\)"):
        model.encode(torch.rand(2, 3, 28, 28))
    with pytest.raises(ValueError, match=r"encode expects"):
        model.encode(torch.rand(28, 28))
    with pytest.raises(ValueError, match=r"decode expects codes of shape \(B, 4\), got \(2, 5\)"):
        model.decode(torch.randn(2, 5))
    with pytest.raises(ValueError, match=r"decode expects codes"):
        model.decode(torch.randn(4))


def test_bce_nats_matches_the_bernoulli_formula():
    torch.manual_seed(2)
    logits = torch.randn(3, 1, 28, 28, dtype=torch.float64)
    target = torch.rand(3, 1, 28, 28, dtype=torch.float64)
    p = torch.sigmoid(logits)
    expected = -(target * p.log() + (1 - target) * (1 - p).log()).sum() / 3
    assert torch.allclose(bce_nats(logits, target), expected, rtol=1e-10)


def test_a_few_training_steps_reduce_the_reconstruction_loss():
    torch.manual_seed(0)
    # 64 blurry "images": random blobs, enough structure to be learnable
    x = torch.nn.functional.avg_pool2d(torch.rand(64, 1, 28, 28), 5, stride=1, padding=2).clamp(0, 1)
    x = (x - x.amin(dim=(2, 3), keepdim=True)) / (x.amax(dim=(2, 3), keepdim=True) - x.amin(dim=(2, 3), keepdim=True))
    model = Autoencoder(AEConfig(hidden=(128,), latent_dim=16))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = reconstruction_loss(model, x).item()
    for _ in range(60):
        loss = reconstruction_loss(model, x)
        opt.zero_grad()
        loss.backward()
        opt.step()
    last = reconstruction_loss(model, x).item()
    # the floor is the entropy of the targets themselves (BCE(x, x) > 0 for grey pixels)
    floor = bce_nats(torch.logit(x.clamp(1e-6, 1 - 1e-6)), x).item()
    assert last < first - 0.5 * (first - floor), f"loss went {first:.1f} -> {last:.1f} (floor {floor:.1f})"


def test_denoising_target_is_used():
    torch.manual_seed(3)
    model = Autoencoder(AEConfig(hidden=(16,), latent_dim=2))
    x, target = torch.rand(5, 1, 28, 28), torch.rand(5, 1, 28, 28)
    logits = model.decode_logits(model.encode(x))
    assert torch.allclose(reconstruction_loss(model, x, target), bce_nats(logits, target))
    assert not torch.allclose(reconstruction_loss(model, x, target), reconstruction_loss(model, x))


# ----------------------------------------------------------------------------- corruptions


def test_gaussian_noise_statistics_and_clamping():
    g = torch.Generator().manual_seed(0)
    x = torch.full((200, 1, 28, 28), 0.5)
    raw = add_gaussian_noise(x, 0.3, generator=g, clamp=False) - x
    assert abs(raw.mean().item()) < 0.003
    assert raw.std().item() == pytest.approx(0.3, rel=0.01)
    clamped = add_gaussian_noise(x, 0.3, generator=torch.Generator().manual_seed(0))
    assert clamped.min() >= 0 and clamped.max() <= 1
    assert torch.equal(clamped, (x + raw).clamp(0, 1)), "same generator seed, same noise"
    assert torch.equal(add_gaussian_noise(x, 0.0), x)


def test_pixel_masking_fraction_and_values():
    x = torch.rand(100, 1, 28, 28) * 0.9 + 0.1  # strictly positive: zeros are masked pixels
    for p in (0.0, 0.25, 0.7, 1.0):
        out = mask_pixels(x, p, generator=torch.Generator().manual_seed(1))
        dropped = out == 0
        assert dropped.float().mean().item() == pytest.approx(p, abs=0.01)
        assert torch.equal(out[~dropped], x[~dropped]), "kept pixels are unchanged"


def test_block_masking_drops_aligned_squares_and_keeps_the_fraction():
    x = torch.ones(300, 1, 28, 28)
    out = mask_pixels(x, 0.4, generator=torch.Generator().manual_seed(2), block=7)
    assert (1 - out).mean().item() == pytest.approx(0.4, abs=0.03)
    cells = out.view(300, 1, 4, 7, 4, 7)
    assert torch.equal(cells.amin(dim=(3, 5)), cells.amax(dim=(3, 5))), "each 7x7 cell is all kept or all dropped"
    with pytest.raises(ValueError, match="block=5 must divide"):
        mask_pixels(x, 0.4, block=5)
    with pytest.raises(ValueError, match="p must be in"):
        mask_pixels(x, 1.5)


def test_masks_are_shared_across_channels():
    x = torch.ones(10, 3, 8, 8)
    out = mask_pixels(x, 0.5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 1], out[:, 2])


# ----------------------------------------------------------------------------- PSNR


@pytest.mark.parametrize("e", [0.5, 0.1, 0.01])
def test_psnr_of_a_constant_error_is_analytic(e):
    x = torch.rand(4, 1, 28, 28)
    expected = 10 * math.log10(1 / e**2)  # MSE = e^2
    assert psnr(x + e, x).item() == pytest.approx(expected, rel=1e-6)
    assert psnr(x - e, x).item() == pytest.approx(expected, rel=1e-6)
    # on the 0..255 scale with max_val=255 the PSNR is the same
    assert psnr(255 * (x + e), 255 * x, max_val=255.0).item() == pytest.approx(expected, rel=1e-6)


def test_psnr_matches_an_independent_numpy_computation():
    rng = np.random.default_rng(0)
    a = rng.uniform(size=(6, 1, 28, 28))
    b = np.clip(a + rng.normal(scale=rng.uniform(0.01, 0.3, size=(6, 1, 1, 1)), size=a.shape), 0, 1)
    expected = np.array([10 * np.log10(1.0 / np.mean((a[i] - b[i]) ** 2)) for i in range(6)])
    got = psnr(torch.from_numpy(b).float(), torch.from_numpy(a).float(), reduction="none")
    assert got.shape == (6,)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5)
    assert psnr(torch.from_numpy(b), torch.from_numpy(a)).item() == pytest.approx(expected.mean(), rel=1e-10)


def test_psnr_input_checks():
    with pytest.raises(ValueError, match="shapes differ"):
        psnr(torch.rand(2, 1, 28, 28), torch.rand(3, 1, 28, 28))
    with pytest.raises(ValueError, match="reduction"):
        psnr(torch.rand(2, 4), torch.rand(2, 4), reduction="sum")
    x = torch.rand(2, 4)
    assert psnr(x, x).item() == pytest.approx(100.0), "identical images: capped at 100 dB, not inf"
