"""Frechet classifier distance (FCD): a sample-quality score for 28x28 images, derived in notebook 14.

FCD is FID (Heusel et al., 2017) with the 128-d penultimate features of a small classifier trained on
the dataset itself in place of Inception-v3's: fit a Gaussian N(mu, Sigma) to the features of each image
set and report the Frechet (2-Wasserstein) distance between the two Gaussians,

    FCD = ||mu_a - mu_b||^2 + Tr(Sigma_a + Sigma_b - 2 (Sigma_a Sigma_b)^{1/2})

Lower is better; 0 means identical feature statistics. Each dataset has its own classifier, so MNIST
and Fashion-MNIST scores are on different scales: read a score against the calibration below.

Calibration, measured by ``scripts/train_fcd_classifier.py`` with 10,000 images per set, always
against the 10,000 test images (torch 2.14.1, CPU, 2 threads; exact values in ``fcd_weights.json``):

    image set (10k images) vs the 10k test images     MNIST    Fashion-MNIST
    first 10k train images                              3.59         0.55
    test images blurred (Gaussian, sigma = 1 px)      324.3        181.5
    test image 0 repeated 10k times                  1687.0        821.7
    uniform noise in [0, 1]                          2005.2        682.0
    classifier test accuracy                         99.42 %      91.71 %

A few units is as close to the test set as the training set is, hundreds is blur-level damage, and
values near the last two rows mean mode collapse or noise.

Two caveats, also measured. (1) FCD is biased upwards for small samples: 2,000 random MNIST train
images score 8.8 against 2,000 random test images, 4.96 against all 10k, and 5,000 vs 5,000 gives 3.4
(Fashion-MNIST: 3.55, 2.35, 1.38). Compare only scores with the same N, and use the full 10k test set
as the reference when you can. (2) The MNIST test set is ordered: its first 5,000 images come from a
different, tidier group of writers than its last 5,000 (FCD 43.3 between the halves; 1.3 for
Fashion-MNIST), so never use ``test.x[:n]`` as a reference for n < 10,000; take a random subset.

Usage::

    from course_lib.fcd import fcd, classifier_accuracy
    score = fcd(samples, test.x, dataset="mnist")      # both (N, 1, 28, 28) in [0, 1]
    acc = classifier_accuracy(samples, wanted_labels)   # for class-conditional generators

The classifier weights in ``course_lib/weights/`` are checked against the sha256 in ``fcd_weights.json``
before loading; ``python scripts/train_fcd_classifier.py`` retrains them (about 2 minutes per dataset
on 2 CPU cores).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .checks import NUM_CLASSES, check_choice, check_images
from .files import sha256_of
from .train import accuracy

DATASETS = ("mnist", "fashion_mnist")
WEIGHTS_DIR = Path(__file__).with_name("weights")
MANIFEST_NAME = "fcd_weights.json"
FEATURE_DIM = 128

# Per-pixel mean and standard deviation of each training set, used to normalise inside the model.
NORMALIZATION = {"mnist": (0.1307, 0.3081), "fashion_mnist": (0.2860, 0.3530)}


class FCDClassifier(nn.Module):
    """A small CNN: two conv/pool stages, a 128-d feature layer, 10 logits (422k parameters)."""

    def __init__(self, mean: float = 0.0, std: float = 1.0, n_classes: int = NUM_CLASSES, dropout: float = 0.3):
        super().__init__()
        # Stored as buffers so that the normalisation travels with the state_dict.
        self.register_buffer("mean", torch.tensor(float(mean)))
        self.register_buffer("std", torch.tensor(float(std)))
        self.conv1 = nn.Conv2d(1, 32, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=3, padding=1)
        self.fc1 = nn.Linear(64 * 7 * 7, FEATURE_DIM)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(FEATURE_DIM, n_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features: (N, 1, 28, 28) in [0, 1] -> (N, 128), non-negative (after ReLU)."""
        x = (x - self.mean) / self.std  # (N, 1, 28, 28), roughly zero mean, unit variance
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)  # (N, 32, 14, 14)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)  # (N, 64, 7, 7)
        x = x.flatten(1)  # (N, 3136)
        return F.relu(self.fc1(x))  # (N, 128)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits: (N, 1, 28, 28) in [0, 1] -> (N, 10)."""
        return self.head(self.drop(self.features(x)))  # (N, 10)


def new_classifier(dataset: str = "mnist") -> FCDClassifier:
    """An untrained classifier with the normalisation constants of ``dataset``."""
    mean, std = NORMALIZATION[_check_dataset(dataset)]
    return FCDClassifier(mean=mean, std=std)


# ----------------------------------------------------------------------------- weights


class WeightsError(RuntimeError):
    """The classifier's weight file is missing or does not match its recorded sha256."""


def _check_dataset(dataset: str) -> str:
    return check_choice(dataset, DATASETS, "dataset for FCD")


def weights_path(dataset: str) -> Path:
    """Where the weights of the ``dataset`` classifier live: ``course_lib/weights/fcd_<dataset>.pt``."""
    return WEIGHTS_DIR / f"fcd_{_check_dataset(dataset)}.pt"


def read_manifest() -> dict:
    """The contents of ``fcd_weights.json`` (sha256, accuracy and calibration per dataset)."""
    path = WEIGHTS_DIR / MANIFEST_NAME
    if not path.is_file():
        raise WeightsError(
            f"Missing FCD weight manifest: {path}\n"
            "Fix: re-run `python scripts/train_fcd_classifier.py` from the repository root "
            "(or restore the file from git)."
        )
    return json.loads(path.read_text(encoding="utf-8"))


def verified_weights_path(dataset: str) -> Path:
    """``weights_path(dataset)`` after checking that it exists and matches its recorded sha256."""
    path = weights_path(dataset)
    fix = (
        f"Fix: re-run `python scripts/train_fcd_classifier.py --dataset {dataset}` from the "
        "repository root (or restore the file from git with `git checkout -- course_lib/weights`)."
    )
    if not path.is_file():
        raise WeightsError(f"Missing FCD classifier weights: {path}\n{fix}")
    entry = read_manifest().get(dataset)
    if entry is None or "sha256" not in entry:
        raise WeightsError(f"{WEIGHTS_DIR / MANIFEST_NAME} has no sha256 recorded for {dataset!r}.\n{fix}")
    actual = sha256_of(path)
    if actual != entry["sha256"]:
        raise WeightsError(
            f"FCD classifier weights {path} are corrupt or were changed: sha256 {actual} "
            f"does not match the recorded {entry['sha256']}.\n{fix}"
        )
    return path


_CACHE: dict[tuple[str, str, str], FCDClassifier] = {}


def load_classifier(dataset: str = "mnist", device: torch.device | str | None = None) -> FCDClassifier:
    """The trained classifier for ``dataset``, in eval mode with gradients off, cached per device."""
    from .device import get_device

    device = torch.device(device) if device is not None else get_device()
    key = (_check_dataset(dataset), str(device), str(weights_path(dataset)))
    if key not in _CACHE:
        path = verified_weights_path(dataset)
        state = torch.load(path, map_location="cpu", weights_only=True)
        model = FCDClassifier()
        model.load_state_dict(state)
        _CACHE[key] = model.to(device).eval().requires_grad_(False)
    return _CACHE[key]


# ----------------------------------------------------------------------------- features


@torch.no_grad()
def compute_features(
    images: torch.Tensor, dataset: str = "mnist", batch_size: int = 500, device: torch.device | str | None = None
) -> torch.Tensor:
    """Penultimate classifier features of ``images`` (N, 1, 28, 28) in [0, 1] -> (N, 128) float64 on CPU."""
    images = check_images(images, unit_range=True)
    model = load_classifier(dataset, device)
    device = next(model.parameters()).device
    chunks = []
    for start in range(0, images.shape[0], batch_size):
        batch = images[start : start + batch_size].to(device, torch.float32)  # (B, 1, 28, 28)
        chunks.append(model.features(batch.clamp(0, 1)).double().cpu())  # (B, 128)
    return torch.cat(chunks)  # (N, 128)


def feature_statistics(features: torch.Tensor | np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (D,) and unbiased covariance (D, D) of ``features`` (N, D), both float64."""
    f = torch.as_tensor(features, dtype=torch.float64)  # (N, D)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"feature_statistics needs features of shape (N, D) with N >= 2, got {tuple(f.shape)}.")
    mu = f.mean(dim=0)  # (D,)
    centered = f - mu  # (N, D)
    sigma = centered.T @ centered / (f.shape[0] - 1)  # (D, D)  Sigma = X_c^T X_c / (N - 1)
    return mu, sigma


def image_statistics(
    images: torch.Tensor, dataset: str = "mnist", batch_size: int = 500, device: torch.device | str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(mu, sigma) of the classifier features of ``images``; keep these to reuse a reference set."""
    if len(images) < 2:  # compute_features checks shape, dtype and range
        raise ValueError(f"FCD compares the mean and covariance of image sets: give at least 2 images "
                         f"(a few hundred for a meaningful score), got {len(images)}.")
    return feature_statistics(compute_features(images, dataset, batch_size, device))


# ----------------------------------------------------------------------------- the distance


def _sqrtm_psd(s: torch.Tensor) -> torch.Tensor:
    """Principal square root of a symmetric positive semi-definite matrix via S = V diag(w) V^T."""
    w, v = torch.linalg.eigh(s)  # w: (D,), v: (D, D)
    return (v * w.clamp(min=0).sqrt()) @ v.T  # (D, D)  S^{1/2} = V diag(sqrt(w)) V^T


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2), computed in float64. Two symmetric
    eigen-decompositions replace a general matrix square root (notebook 14)."""
    mu1, mu2 = (torch.as_tensor(m, dtype=torch.float64) for m in (mu1, mu2))  # (D,)
    s1, s2 = (torch.as_tensor(s, dtype=torch.float64) for s in (sigma1, sigma2))  # (D, D)
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.shape[0], mu1.shape[0]):
        raise ValueError(
            f"frechet_distance: shapes do not match: mu1 {tuple(mu1.shape)}, sigma1 {tuple(s1.shape)}, "
            f"mu2 {tuple(mu2.shape)}, sigma2 {tuple(s2.shape)}."
        )
    s1, s2 = (s1 + s1.T) / 2, (s2 + s2.T) / 2  # remove round-off asymmetry
    sqrt_s1 = _sqrtm_psd(s1)  # (D, D)
    m = sqrt_s1 @ s2 @ sqrt_s1  # (D, D)  M = S1^{1/2} S2 S1^{1/2}
    tr_covmean = torch.linalg.eigvalsh((m + m.T) / 2).clamp(min=0).sqrt().sum()  # Tr((S1 S2)^{1/2})
    diff = mu1 - mu2  # (D,)
    return float(diff @ diff + torch.trace(s1) + torch.trace(s2) - 2 * tr_covmean)  # ||dmu||^2 + Tr(...)


def fcd(images_a: torch.Tensor, images_b: torch.Tensor, dataset: str = "mnist", batch_size: int = 500,
        device: torch.device | str | None = None) -> float:
    """Frechet classifier distance between two image sets, each (N, 1, 28, 28) in [0, 1]."""
    images_a = check_images(images_a, "images_a", unit_range=True)
    images_b = check_images(images_b, "images_b", unit_range=True)
    mu_a, sigma_a = image_statistics(images_a, dataset, batch_size, device)
    mu_b, sigma_b = image_statistics(images_b, dataset, batch_size, device)
    return frechet_distance(mu_a, sigma_a, mu_b, sigma_b)


@torch.no_grad()
def classifier_accuracy(
    images: torch.Tensor,
    labels: torch.Tensor,
    dataset: str = "mnist",
    batch_size: int = 500,
    device: torch.device | str | None = None,
) -> float:
    """Fraction of ``images`` (N, 1, 28, 28) in [0, 1] that the classifier assigns to ``labels`` (N,)."""
    images = check_images(images, unit_range=True)
    model = load_classifier(dataset, device)  # accuracy checks the labels
    return accuracy(model, images.float().clamp(0, 1), labels, batch_size)


__all__ = [
    "DATASETS", "FCDClassifier", "WeightsError", "new_classifier", "weights_path", "read_manifest",
    "verified_weights_path", "load_classifier", "compute_features", "feature_statistics",
    "image_statistics", "frechet_distance", "fcd", "classifier_accuracy",
]
