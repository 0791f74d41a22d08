"""Tests of the Frechet classifier distance (course_lib/fcd.py) and its committed weights.

Needs MNIST under ``COURSE_DATA`` (the test runner points it at the offline copy); never
touches the network.
"""
from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pytest
import scipy.linalg
import torch

from course_lib import fcd as fcd_lib
from course_lib.data import load_mnist

N = 2000  # images per set: enough to separate real from noise, small enough for a 2-core CI


@pytest.fixture(scope="module")
def mnist():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("COURSE_OFFLINE", "1")
        train, test = load_mnist("train"), load_mnist("test")
    # Random subsets: the MNIST test set is ordered (its two halves come from different writers).
    g = torch.Generator().manual_seed(0)
    pick_train, pick_test = torch.randperm(len(train), generator=g)[:N], torch.randperm(len(test), generator=g)[:N]
    train.x, train.y = train.x[pick_train], train.y[pick_train]
    test.x, test.y = test.x[pick_test], test.y[pick_test]
    return train, test


def random_spd(rng: np.random.Generator, d: int) -> np.ndarray:
    a = rng.standard_normal((d, d + 5))
    return a @ a.T / d + 0.01 * np.eye(d)


# ----------------------------------------------------------------------------- the distance


def test_frechet_distance_closed_form_for_commuting_covariances():
    rng = np.random.default_rng(0)
    d = 16
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))  # shared eigenvectors -> commuting covariances
    a, b = rng.uniform(0.1, 3.0, d), rng.uniform(0.1, 3.0, d)
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    s1, s2 = q @ np.diag(a) @ q.T, q @ np.diag(b) @ q.T
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert fcd_lib.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-9)
    # Diagonal case, with torch float32 inputs.
    got = fcd_lib.frechet_distance(*(torch.tensor(v, dtype=torch.float32) for v in (mu1, np.diag(a), mu2, np.diag(b))))
    assert got == pytest.approx(expected, rel=1e-5)


def test_frechet_distance_matches_scipy_sqrtm_reference():
    rng = np.random.default_rng(1)
    for d in (3, 32):
        s1, s2 = random_spd(rng, d), random_spd(rng, d)
        assert not np.allclose(s1 @ s2, s2 @ s1)  # a genuinely non-commuting pair
        mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
        covmean = scipy.linalg.sqrtm(s1 @ s2)
        reference = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean).real
        assert fcd_lib.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(reference, rel=1e-7, abs=1e-9)


def test_frechet_distance_identity_symmetry_and_singular_covariances():
    rng = np.random.default_rng(2)
    feats_a = rng.standard_normal((500, 8)) @ rng.standard_normal((8, 8))
    feats_b = rng.standard_normal((500, 8)) + 0.5
    stats_a, stats_b = fcd_lib.feature_statistics(feats_a), fcd_lib.feature_statistics(feats_b)
    assert abs(fcd_lib.frechet_distance(*stats_a, *stats_a)) < 1e-9
    ab, ba = fcd_lib.frechet_distance(*stats_a, *stats_b), fcd_lib.frechet_distance(*stats_b, *stats_a)
    assert ab > 1.0
    assert ab == pytest.approx(ba, rel=1e-9)
    # A rank-deficient covariance (dead feature units, or one image repeated) stays finite and exact:
    # against a point mass at mu2, FD = ||mu1 - mu2||^2 + Tr(S1).
    mu, sigma = stats_a
    zero = torch.zeros_like(sigma)
    assert fcd_lib.frechet_distance(mu, sigma, mu + 1, zero) == pytest.approx(8 + float(torch.trace(sigma)), rel=1e-9)


def test_feature_statistics_match_numpy():
    rng = np.random.default_rng(3)
    feats = rng.standard_normal((300, 5)) * [1, 2, 3, 4, 5]
    mu, sigma = fcd_lib.feature_statistics(torch.tensor(feats, dtype=torch.float32))
    assert mu.dtype == sigma.dtype == torch.float64
    np.testing.assert_allclose(mu.numpy(), feats.mean(0), atol=1e-6)
    np.testing.assert_allclose(sigma.numpy(), np.cov(feats, rowvar=False), rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- weights


@pytest.mark.parametrize("dataset", fcd_lib.DATASETS)
def test_committed_weights_match_recorded_sha256(dataset):
    manifest = json.loads((fcd_lib.WEIGHTS_DIR / "fcd_weights.json").read_text())
    entry = manifest[dataset]
    path = fcd_lib.WEIGHTS_DIR / entry["file"]
    assert path == fcd_lib.weights_path(dataset)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == entry["sha256"]
    assert path.stat().st_size < 5_000_000
    model = fcd_lib.load_classifier(dataset, device="cpu")
    assert sum(p.numel() for p in model.parameters()) == entry["n_params"] < 1_000_000
    assert not model.training


def _copy_weights(tmp_path):
    for name in ("fcd_mnist.pt", "fcd_weights.json"):
        shutil.copy(fcd_lib.WEIGHTS_DIR / name, tmp_path / name)
    return tmp_path / "fcd_mnist.pt"


def test_corrupted_weights_give_a_clear_error(tmp_path, monkeypatch):
    path = _copy_weights(tmp_path)
    monkeypatch.setattr(fcd_lib, "WEIGHTS_DIR", tmp_path)
    fcd_lib.load_classifier("mnist", device="cpu")  # the intact copy loads
    fcd_lib._CACHE.clear()
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # flip one byte in the middle of the tensor data
    path.write_bytes(bytes(data))
    with pytest.raises(fcd_lib.WeightsError, match="train_fcd_classifier.py") as err:
        fcd_lib.load_classifier("mnist", device="cpu")
    assert str(path) in str(err.value) and "sha256" in str(err.value)
    path.unlink()
    with pytest.raises(fcd_lib.WeightsError, match="Missing FCD classifier weights"):
        fcd_lib.load_classifier("mnist", device="cpu")


# ----------------------------------------------------------------------------- the classifier and FCD


def test_mnist_classifier_accuracy(mnist):
    _, test = mnist
    acc = fcd_lib.classifier_accuracy(test.x, test.y, "mnist", device="cpu")
    assert acc >= 0.98
    shuffled = test.y.roll(1)  # wrong labels must score low: the metric can fail
    assert fcd_lib.classifier_accuracy(test.x, shuffled, "mnist", device="cpu") < 0.3


def test_features_are_the_classifiers_penultimate_layer_whatever_the_batching():
    x = torch.rand(7, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    feats = fcd_lib.compute_features(x, "mnist", batch_size=3, device="cpu")
    assert feats.shape == (7, fcd_lib.FEATURE_DIM) and feats.dtype == torch.float64
    model = fcd_lib.load_classifier("mnist", "cpu")
    with torch.no_grad():
        by_hand = model.features(x).double()  # (7, 128), one batch
        logits = model.head(by_hand.float())  # eval mode: dropout is off, the head reads these features
    assert torch.allclose(feats, by_hand, atol=1e-5)
    assert torch.equal(logits.argmax(1), model(x).argmax(1))
    assert not torch.allclose(feats[0], feats[1])  # different images, different features


def test_fcd_separates_real_images_from_noise(mnist):
    train, test = mnist
    noise = torch.rand(N, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    real = fcd_lib.fcd(train.x, test.x, "mnist", device="cpu")
    fake = fcd_lib.fcd(noise, test.x, "mnist", device="cpu")
    assert 0 < real < 0.05 * fake


@pytest.mark.parametrize(
    "images",
    [
        torch.rand(4, 1, 28, 28) * 2 - 1,  # [-1, 1] instead of [0, 1]
        torch.rand(4, 1, 28, 28) * 255,  # [0, 255]
        torch.rand(4, 28, 28),  # no channel dimension
        torch.rand(4, 3, 28, 28),  # colour
        torch.full((4, 1, 28, 28), float("nan")),
    ],
)
def test_bad_inputs_raise_value_error(images):
    with pytest.raises(ValueError, match=r"\(N, 1, 28, 28\) with values in \[0, 1\]"):
        fcd_lib.fcd(images, torch.rand(4, 1, 28, 28), "mnist", device="cpu")


def test_one_image_is_not_an_image_set():
    with pytest.raises(ValueError, match="at least 2 images.*got 1"):
        fcd_lib.fcd(torch.rand(1, 1, 28, 28), torch.rand(4, 1, 28, 28), "mnist", device="cpu")


def test_slightly_out_of_range_input_is_accepted():
    x = torch.rand(8, 1, 28, 28) * (1 + 2e-4) - 1e-4  # within the 1e-3 tolerance
    assert np.isfinite(fcd_lib.fcd(x, torch.rand(8, 1, 28, 28), "mnist", device="cpu"))


def test_unknown_dataset():
    with pytest.raises(ValueError, match="fashion_mnist"):
        fcd_lib.load_classifier("cifar10")
