"""Tests of course_lib/zoo.py: every recipe trains and samples, labels are enforced and honoured,
runs are reproducible, checkpoints round-trip, and the FLOP count matches a hand count.

Synthetic images only (no dataset needed); tiny widths keep the whole file at a few seconds.
"""
from __future__ import annotations

import pytest
import torch

from course_lib import zoo

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread is faster

TINY = {"vae": 32, "dcgan": 8, "cgan": 8, "wgan_gp": 8, "ddpm": 8, "cfg": 8}  # widths for fast tests


def images(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g)


def quick(name: str, n: int = 20, steps: int = 2, seed: int = 0, **kwargs) -> zoo.Trained:
    x, y = images(n)
    return zoo.train(name, x, y, steps=steps, batch_size=8, width=TINY[name], device="cpu", seed=seed,
                     progress=False, **kwargs)


def labels_for(name: str, n: int) -> torch.Tensor | None:
    return torch.arange(n) % 10 if name in zoo.CONDITIONAL else None


@pytest.mark.parametrize("name", zoo.MODELS)
def test_every_model_trains_and_samples_images_in_unit_range(name):
    trained = quick(name)
    assert trained.name == name and trained.steps == 2 and trained.train_seconds > 0
    assert not trained.model.training
    assert ("g_loss" if zoo._family(name) == "gan" else "loss") in trained.history
    out = zoo.sample(trained, 7, labels_for(name, 7), ddim_steps=3, batch_size=4)  # two batches
    assert out.shape == (7, 1, 28, 28) and out.dtype == torch.float32 and out.device.type == "cpu"
    assert torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 1
    assert out.std() > 0  # not a constant image


@pytest.mark.parametrize("name", zoo.CONDITIONAL)
def test_conditional_models_require_valid_labels(name):
    x, _ = images(10)
    with pytest.raises(ValueError, match="class-conditional"):
        zoo.train(name, x, steps=1, width=TINY[name], device="cpu", progress=False)
    with pytest.raises(ValueError, match=r"labels: expected 10 integer labels in \[0, 10\)"):
        zoo.train(name, x, torch.full((10,), 10), steps=1, width=TINY[name], device="cpu", progress=False)
    trained = quick(name, steps=1)
    with pytest.raises(ValueError, match="class-conditional"):
        zoo.sample(trained, 4)
    with pytest.raises(ValueError, match=r"shape \(4,\)"):
        zoo.sample(trained, 4, labels=torch.arange(3))


def test_wrong_inputs_get_clear_errors():
    x, y = images(4)
    with pytest.raises(ValueError, match="Unknown model"):
        zoo.train("gan", x, steps=1)
    with pytest.raises(ValueError, match=r"\(N, 1, 28, 28\)"):
        zoo.train("vae", x[:, :, :14], steps=1)
    with pytest.raises(ValueError, match="values in"):
        zoo.train("vae", x * 2 - 1, steps=1)
    with pytest.raises(ValueError, match="multiple of 8"):
        zoo.train("ddpm", x, steps=1, width=12)


def test_diffusion_trains_on_other_image_sizes_and_keeps_them_through_save_and_load(tmp_path):
    """Notebook 08's audio model is the same UNet on (1, 32, 32) spectrograms; the GANs and the VAE are 28 x 28 only."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(12, 1, 32, 32, generator=g), torch.randint(0, 10, (12,), generator=g)
    trained = zoo.train("cfg", x, y, steps=2, batch_size=4, width=8, device="cpu", progress=False)
    assert trained.extra["image_shape"] == [1, 32, 32]
    out = zoo.sample(trained, 5, torch.arange(5), ddim_steps=2)
    assert out.shape == (5, 1, 32, 32) and out.min() >= 0 and out.max() <= 1
    again = zoo.load(zoo.save(trained, tmp_path / "audio.pt"), device="cpu")
    assert torch.equal(zoo.sample(again, 5, torch.arange(5), ddim_steps=2), out)
    for name in ("vae", "dcgan", "cgan"):
        with pytest.raises(ValueError, match=r"\(N, 1, 28, 28\)"):
            zoo.train(name, x, y, steps=1, width=TINY[name], device="cpu", progress=False)
    with pytest.raises(ValueError, match=r"\(N, 1, 28, 28\)"):  # the UNet halves H and W twice
        zoo.train("cfg", torch.rand(4, 1, 30, 30), torch.arange(4), steps=1, width=8, device="cpu", progress=False)


@pytest.mark.parametrize("name", ["vae", "cgan", "wgan_gp", "cfg"])
def test_same_seed_same_model_and_samples_global_rng_untouched(name):
    state = torch.random.get_rng_state()
    a, b, c = quick(name, seed=3), quick(name, seed=3), quick(name, seed=4)
    assert torch.equal(torch.random.get_rng_state(), state)
    for (k, pa), pb in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        assert torch.equal(pa, pb), k
    labels = labels_for(name, 6)
    sa, sb = zoo.sample(a, 6, labels, ddim_steps=3), zoo.sample(b, 6, labels, ddim_steps=3)
    assert torch.equal(sa, sb)
    assert not torch.equal(sa, zoo.sample(a, 6, labels, ddim_steps=3, seed=1))  # the sampling seed matters
    assert not torch.equal(sa, zoo.sample(c, 6, labels, ddim_steps=3))  # so does the training seed


@pytest.mark.parametrize("name", zoo.MODELS)
def test_save_load_round_trip_gives_identical_samples(name, tmp_path):
    trained = quick(name, steps=1)
    path = zoo.save(trained, tmp_path / f"{name}.pt")
    again = zoo.load(path, device="cpu")
    assert (again.name, again.steps, again.train_seconds) == (name, 1, trained.train_seconds)
    assert again.history.records == trained.history.records
    labels = labels_for(name, 5)
    assert torch.equal(zoo.sample(trained, 5, labels, ddim_steps=3), zoo.sample(again, 5, labels, ddim_steps=3))


@pytest.mark.parametrize("name", ["vae", "dcgan", "cfg"])
@pytest.mark.parametrize("n", [1, 20])
def test_training_on_very_few_images(name, n):
    trained = quick(name, n=n, steps=3)
    assert trained.extra["n_train"] == n and trained.extra["batch_size"] == max(2, min(8, n))
    assert zoo.sample(trained, 2, labels_for(name, 2), ddim_steps=2).shape == (2, 1, 28, 28)


def test_vae_loss_falls():
    x, _ = images(64)
    x = (x > 0.5).float() * torch.linspace(0, 1, 28).view(1, 1, 1, 28)  # a shared structure to learn
    trained = zoo.train("vae", x, steps=60, batch_size=32, width=64, device="cpu", progress=False)
    losses = trained.history.values("loss")
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5


def test_conditional_gan_samples_follow_their_labels():
    """Two classes: label 0 = left half white, label 1 = right half white. After a short training the
    samples for each label must be bright on the right side."""
    n = 64
    y = torch.arange(n) % 2
    left = torch.zeros(1, 1, 28, 28)
    left[..., :14] = 1
    x = torch.where(y.view(n, 1, 1, 1) == 0, left, 1 - left)  # (n, 1, 28, 28)
    trained = zoo.train("cgan", x, y, steps=100, batch_size=32, width=8, lr=2e-3, device="cpu", progress=False)
    out = zoo.sample(trained, 16, torch.tensor([0] * 8 + [1] * 8))
    left_mean = out[..., :14].flatten(1).mean(1)  # (16,)
    assert (left_mean[:8] > 0.7).all() and (left_mean[8:] < 0.3).all(), left_mean


def test_cfg_sampling_reads_labels_and_guidance_scale():
    """A short diffusion run cannot learn the classes yet, but the label and w must reach the UNet."""
    trained = quick("cfg", steps=3)
    zeros, ones = torch.zeros(4, dtype=torch.long), torch.ones(4, dtype=torch.long)
    a = zoo.sample(trained, 4, zeros, ddim_steps=3)
    assert not torch.equal(a, zoo.sample(trained, 4, ones, ddim_steps=3))
    assert not torch.equal(a, zoo.sample(trained, 4, zeros, ddim_steps=3, guidance_scale=1.0))
    assert torch.equal(a, zoo.sample(trained, 4, zeros, ddim_steps=3, guidance_scale=2.0))


def test_vae_flops_match_a_hand_count():
    """One VAE step: every Linear costs 2 B d_in d_out FLOPs forward and twice that backward, except that
    the first layer computes no gradient for its input (the images)."""
    B, h, L, P = 16, 32, zoo.RECIPES["vae"].latent_dim, 784
    layers = [P * h, h * L, h * L, L * h, h * P]  # encoder, to_mu, to_logvar, decoder, to_logits
    expected = 2 * B * (3 * sum(layers) - P * h)
    assert zoo.train_flops_per_step("vae", batch_size=B, width=h) == expected
    # a WGAN-GP step holds five critic steps (each with a double backward), a DCGAN step one
    assert zoo.train_flops_per_step("wgan_gp", 4, width=8) > 5 * zoo.train_flops_per_step("dcgan", 4, width=8) / 2


@pytest.mark.parametrize("name", ["vae", "dcgan", "cfg"])
def test_run_resumed_from_a_checkpoint_equals_an_uninterrupted_run(name, tmp_path):
    """Train 6 steps at once, or 3 steps, checkpoint, rebuild the run, load, 3 more: the same weights."""
    from course_lib.train import load_checkpoint, save_checkpoint

    x, y = images(20)
    kwargs = dict(steps=6, batch_size=8, width=TINY[name], ema_decay=0.9, device="cpu", seed=5)
    whole = zoo.Run(name, x, y, **kwargs).advance(progress=False)
    first = zoo.Run(name, x, y, **kwargs).advance(3, progress=False)
    save_checkpoint(tmp_path / "run.ckpt", run=first.state_dict())
    resumed = zoo.Run(name, x, y, **kwargs)
    resumed.load_state_dict(load_checkpoint(tmp_path / "run.ckpt")["run"])
    resumed.advance(progress=False)
    assert resumed.step == whole.step == 6
    for (k, a), b in zip(whole.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), k
    for k, a in whole.ema.shadow.items():
        assert torch.equal(a, resumed.ema.shadow[k]), k
    assert whole.history.records == resumed.history.records
    # the sampled model holds the EMA weights, not the last ones
    trained = whole.trained()
    k = next(k for k, v in whole.model.state_dict().items() if v.is_floating_point())
    assert torch.equal(trained.model.state_dict()[k], whole.ema.shadow[k])
    assert not torch.equal(trained.model.state_dict()[k], whole.model.state_dict()[k])
    with pytest.raises(ValueError, match="planned for 6 steps"):
        zoo.Run(name, x, y, **{**kwargs, "steps": 7}).load_state_dict(first.state_dict())


@pytest.mark.parametrize("name", zoo.MODELS)
def test_every_model_shares_one_sample_interface(name):
    trained = quick(name)
    labels = labels_for(name, 5)
    a = trained.sample(5, labels, torch.Generator().manual_seed(4), ddim_steps=3)
    assert torch.equal(a, zoo.sample(trained, 5, labels, seed=4, ddim_steps=3))
    assert torch.equal(a, trained.sample(5, labels, generator=torch.Generator().manual_seed(4), ddim_steps=3))
    with pytest.raises(ValueError, match="unknown settings"):
        trained.sample(2, labels_for(name, 2), steps=3)


def test_load_of_a_foreign_checkpoint_names_what_is_wrong(tmp_path):
    from course_lib.train import save_checkpoint

    path = save_checkpoint(tmp_path / "other.pt", model={"w": torch.zeros(2)}, step=3)
    with pytest.raises(ValueError, match=r"not a checkpoint written by zoo.save \(it lacks name, config"):
        zoo.load(path, device="cpu")


def test_fp16_save_halves_the_file_and_loads_as_float32(tmp_path):
    trained = quick("cfg", steps=1)
    full, half = zoo.save(trained, tmp_path / "a.pt"), zoo.save(trained, tmp_path / "b.pt", half=True)
    assert half.stat().st_size < 0.6 * full.stat().st_size
    again = zoo.load(half, device="cpu")
    for (k, a), b in zip(trained.model.state_dict().items(), again.model.state_dict().values()):
        assert b.dtype == a.dtype and torch.allclose(a, b, rtol=1e-3, atol=1e-4), k
    assert again.extra["ddim_steps"] == zoo.DIFFUSION_SAMPLER["ddim_steps"]


def test_init_from_fine_tunes_the_given_weights_and_refuses_another_network():
    base = quick("cfg", steps=2, seed=1)
    x, y = images(20, seed=5)
    zero = zoo.train("cfg", x, y, steps=1, batch_size=8, width=TINY["cfg"], lr=1e-12, ema_decay=0.0, device="cpu",
                     progress=False, init_from=base)
    for (k, p0), p1 in zip(base.model.state_dict().items(), zero.model.state_dict().values()):
        assert torch.allclose(p0, p1, atol=1e-6), f"{k}: a step of lr 1e-12 should leave the initial weights in place"
    assert zero.extra["init_from"] == "a trained 'cfg'"
    scratch = zoo.train("cfg", x, y, steps=1, batch_size=8, width=TINY["cfg"], lr=1e-12, ema_decay=0.0, device="cpu",
                        progress=False)
    assert "init_from" not in scratch.extra
    assert not torch.allclose(next(iter(scratch.model.parameters())), next(iter(zero.model.parameters())))
    inherited = zoo.train("cfg", x, y, steps=1, batch_size=8, device="cpu", progress=False, init_from=base)
    assert inherited.extra["width"] == TINY["cfg"] != zoo.RECIPES["cfg"].width, "no width given: the source's"
    with pytest.raises(ValueError, match="init_from: .*same name and width"):
        zoo.train("cfg", x, y, steps=1, batch_size=8, width=16, device="cpu", progress=False, init_from=base)
    with pytest.raises(ValueError, match="init_from"):
        zoo.train("ddpm", x, steps=1, batch_size=8, width=TINY["ddpm"], device="cpu", progress=False, init_from=base)


def test_init_from_a_reference_by_name_starts_at_its_weights():
    ref = zoo.load("cfg_mnist", device="cpu")
    x, y = images(20, seed=6)
    rng = torch.random.get_rng_state()
    run = zoo.Run("cfg", x, y, steps=5, batch_size=8, device="cpu", init_from="cfg_mnist")
    assert torch.equal(torch.random.get_rng_state(), rng), "loading the reference must leave the global random state"
    for (k, p0), p1 in zip(ref.model.state_dict().items(), run.model.state_dict().values()):
        assert torch.equal(p0, p1), k
    assert run.trained().extra["init_from"] == "cfg_mnist"
