"""course_lib.latent: shapes, the loss terms against closed forms, the scale factor, encode/decode round trips,
a few training steps, and input checks."""
import pytest
import torch
import torch.nn.functional as F
from torch.distributions import Normal, kl_divergence

from course_lib.latent import (
    LatentAEConfig, LatentAutoencoder, decode_latents, encode_latents, latent_ae_loss, latent_scale_factor,
)
from course_lib.train import History, fit


def small_ae(seed=0, **kw):
    torch.manual_seed(seed)
    cfg = dict(channels=(8, 8, 16), latent_channels=4, groups=4)
    cfg.update(kw)
    return LatentAutoencoder(LatentAEConfig(**cfg))


def images(n=6, seed=1, size=28):
    """Blurry blobs in [0, 1], a stand-in for Fashion-MNIST (no data files needed)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, size // 4, size // 4, generator=g)
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1)


def test_shapes_28_to_7x7x4_and_other_sizes():
    model = small_ae()
    x = images()
    mu, logvar = model.encode(x)
    assert mu.shape == logvar.shape == (6, 4, 7, 7)
    logits, mu2, _ = model(x)
    assert logits.shape == (6, 1, 28, 28) and torch.equal(mu, mu2)
    out = model.decode(mu)
    assert out.shape == (6, 1, 28, 28) and out.min() >= 0 and out.max() <= 1
    two_levels = small_ae(channels=(8, 16), latent_channels=3)  # factor 2: 28 -> 14
    assert two_levels.encode(images(n=2))[0].shape == (2, 3, 14, 14)
    assert small_ae().encode(images(n=2, size=32))[0].shape == (2, 4, 8, 8)


def test_loss_terms_against_closed_forms():
    model = small_ae()
    x = images()
    loss, terms = latent_ae_loss(model, x, kl_weight=0.01, generator=torch.Generator().manual_seed(0))
    mu, logvar = model.encode(x)
    # KL(N(mu, sigma^2) || N(0, 1)) summed over the 4 x 7 x 7 entries, averaged over the batch
    expected_kl = kl_divergence(Normal(mu, (0.5 * logvar).exp()), Normal(0.0, 1.0)).flatten(1).sum(1).mean()
    assert torch.allclose(terms["kl"], expected_kl, rtol=1e-5)
    # the reconstruction term with the same noise: BCE in nats, summed over pixels
    g = torch.Generator().manual_seed(0)
    z = mu + (0.5 * logvar).exp() * torch.randn(mu.shape, generator=g)
    expected_recon = F.binary_cross_entropy_with_logits(model.decode_logits(z), x, reduction="sum") / len(x)
    assert torch.allclose(terms["recon"], expected_recon, rtol=1e-5)
    assert torch.allclose(loss, expected_recon + 0.01 * expected_kl, rtol=1e-5)
    assert set(terms) == {"recon", "kl", "mse"} and 0 < terms["mse"] < 1


def test_kl_is_zero_for_the_prior_and_known_for_a_shifted_mean():
    model = small_ae()
    x = images(n=2)
    out = model.encoder[-1]  # the conv that outputs mu and logvar
    with torch.no_grad():
        out.weight.zero_()
        out.bias.zero_()  # mu = 0, logvar = 0: q = N(0, I), the prior
    assert latent_ae_loss(model, x)[1]["kl"].abs() < 1e-6
    with torch.no_grad():
        out.bias[:4] = 1.0  # mu = 1 everywhere: KL = 1/2 * 196 entries
    assert torch.isclose(latent_ae_loss(model, x)[1]["kl"], torch.tensor(98.0))


def test_kl_weight_defaults_to_the_config_and_batches_may_be_tuples():
    model = small_ae(kl_weight=0.5)
    x = images()
    loss, terms = latent_ae_loss(model, (x, torch.zeros(6)), generator=torch.Generator().manual_seed(0))
    assert torch.allclose(loss, terms["recon"] + 0.5 * terms["kl"])
    loss0, terms0 = latent_ae_loss(model, x, kl_weight=0.0, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(loss0, terms0["recon"]) and torch.allclose(terms0["recon"], terms["recon"])


def test_scale_factor_gives_unit_std():
    g = torch.Generator().manual_seed(0)
    z = 3.7 * torch.randn(50, 4, 7, 7, generator=g) + 0.5
    s = latent_scale_factor(z)
    assert abs(s - 1 / 3.7) < 0.01
    assert abs((s * z).std().item() - 1.0) < 1e-5
    with pytest.raises(ValueError, match="vary"):
        latent_scale_factor(torch.zeros(10, 4, 7, 7))
    with pytest.raises(ValueError, match="at least two"):
        latent_scale_factor(torch.ones(1))


def test_encode_decode_latents_scale_round_trip_and_mode():
    model = small_ae().train()
    x = images(n=7)
    mu = encode_latents(model, x, batch_size=3)  # batches of 3, 3, 1
    assert model.training  # mode restored
    with torch.no_grad():
        assert torch.allclose(mu, model.encode(x)[0], atol=1e-6)
        expected = model.decode(mu)
    z = encode_latents(model, x, batch_size=3, scale=0.25)
    assert torch.allclose(z, 0.25 * mu)
    assert torch.allclose(decode_latents(model, z, batch_size=2, scale=0.25), expected, atol=1e-6)
    assert not torch.allclose(decode_latents(model, z), expected, atol=1e-3)  # forgetting the scale is wrong
    g = torch.Generator().manual_seed(0)
    sample = encode_latents(model, x, sample=True, generator=g)
    assert sample.shape == mu.shape and not torch.allclose(sample, mu)


def test_a_few_training_steps_lower_the_reconstruction_loss(one_thread):
    model = small_ae()
    x = images(n=16)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)

    def recon():
        with torch.no_grad():
            return latent_ae_loss(model, x, generator=torch.Generator().manual_seed(0))[1]["recon"].item()

    before = recon()
    history = fit(model, opt, latent_ae_loss, [x], steps=60, log_every=20, progress=False, history=History())
    assert {"loss", "recon", "kl", "mse"} <= set(history.records)
    assert recon() < 0.9 * before


def test_bad_inputs_say_how_to_fix():
    model = small_ae()
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\).*x\[:, None\]"):
        model.encode(torch.rand(2, 28, 28))
    with pytest.raises(ValueError, match="divisible by 4"):
        model.encode(torch.rand(2, 1, 30, 30))
    with pytest.raises(ValueError, match=r"\[0, 1\].*\(x \+ 1\) / 2"):
        latent_ae_loss(model, images() * 2 - 1)
    with pytest.raises(ValueError, match=r"\(B, 4, h, w\)"):
        model.decode(torch.randn(2, 3, 7, 7))
    with pytest.raises(ValueError, match="divisible by groups=8"):
        LatentAutoencoder(LatentAEConfig(channels=(12, 16)))
