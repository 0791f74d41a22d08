"""Scores for generated images beyond FCD: KID, precision and recall, memorization, the bootstrap and CAS.

Notebook 14 derives and calibrates each score. KID, precision and recall and memorization take features
(N, D), e.g. ``compute_features(images)`` (N, 128), or images, flattened to pixels (N, 784); distances are
Euclidean, in float64 on the inputs' device, a block of rows at a time. CAS's ``train_classifier`` and
``accuracy`` (images (N, 1, 28, 28) in [0, 1]) are reusable on their own.

Usage::

    from course_lib.fcd import compute_features
    real, fake = compute_features(test.x), compute_features(samples)         # (N, 128) each
    kid_mean, kid_std = kid(real, fake, generator=g)
    pr = precision_recall(real, fake, k=3)                 # precision, recall, density, coverage
    rep = memorization_report(samples, train.x, heldout=test.x)    # pixel space
    est, lo, hi = bootstrap_ci(lambda y, t: (y == t).double().mean(), pred, target, generator=g)
    cas = classification_accuracy_score(samples, wanted, test.x, test.y, steps=1000)
"""
from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .checks import NUM_CLASSES, check_images, check_labels
from .device import get_device
from .train import accuracy as train_accuracy
from .train import fit


def _as_matrix(x, name: str) -> torch.Tensor:
    """(N, ...) tensor or array -> (N, D) float64, rows flattened; a clear error for empty input."""
    x = torch.as_tensor(x)
    if x.ndim < 2 or x.shape[0] == 0:
        raise ValueError(f"{name}: expected features (N, D) or images (N, C, H, W), got shape {tuple(x.shape)}.")
    return x.flatten(1).double()


def _check_pair(a, b, names: tuple[str, str]) -> tuple[torch.Tensor, torch.Tensor]:
    a, b = _as_matrix(a, names[0]), _as_matrix(b, names[1])
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"{names[0]} has {a.shape[1]} features per row but {names[1]} has {b.shape[1]}.")
    return a, b.to(a.device)


def _distance_blocks(a: torch.Tensor, b: torch.Tensor, chunk: int) -> Iterator[tuple[int, torch.Tensor]]:
    """(start, D) per block of rows of a, with D[i, j] = ||a[start + i] - b[j]||, shape (<= chunk, N_b)."""
    for start in range(0, a.shape[0], chunk):
        yield start, torch.cdist(a[start : start + chunk], b)


# ----------------------------------------------------------------------------- KID


def polynomial_kernel(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """k(x, y) = (x.y / d + 1)^3 for all pairs of rows: (n, d), (m, d) -> (n, m)."""
    return (x @ y.T / x.shape[1] + 1) ** 3


def mmd2_unbiased(x: torch.Tensor, y: torch.Tensor) -> float:
    """Unbiased MMD^2 (notebook 14) with the cubic kernel between two equal-size sets (m, d), m >= 2."""
    x, y = _check_pair(x, y, ("x", "y"))
    m = x.shape[0]
    if y.shape[0] != m or m < 2:
        raise ValueError(f"mmd2_unbiased needs two sets of equal size m >= 2, got {x.shape[0]} and {y.shape[0]}.")
    k_xx, k_yy, k_xy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)  # (m, m)
    within = (k_xx.sum() - k_xx.diagonal().sum() + k_yy.sum() - k_yy.diagonal().sum()) / (m * (m - 1))
    return float(within - 2 * k_xy.mean())  # the i == j terms are dropped only within a set


def kid(feats_a, feats_b, n_subsets: int = 100, subset_size: int = 1000,
        generator: torch.Generator | None = None) -> tuple[float, float]:
    """Kernel inception distance (Binkowski et al., 2018): (mean, std) of ``mmd2_unbiased`` over random
    subsets of m = min(subset_size, N_a, N_b) rows, drawn without replacement from each set. Unbiased for
    every m, unlike FCD; one estimate can be negative; papers often quote KID x 1000."""
    a, b = _check_pair(feats_a, feats_b, ("feats_a", "feats_b"))
    m = min(subset_size, a.shape[0], b.shape[0])
    if m < 2 or n_subsets < 1:
        raise ValueError(f"kid needs at least 2 rows per set and n_subsets >= 1, got m={m}, n_subsets={n_subsets}.")
    rng_device = generator.device if generator is not None else "cpu"
    values = []
    for _ in range(n_subsets):
        ia = torch.randperm(a.shape[0], generator=generator, device=rng_device)[:m].to(a.device)  # (m,)
        ib = torch.randperm(b.shape[0], generator=generator, device=rng_device)[:m].to(a.device)  # (m,)
        values.append(mmd2_unbiased(a[ia], b[ib]))
    return float(np.mean(values)), float(np.std(values))


# ----------------------------------------------------------------------------- neighbours


@torch.no_grad()
def nearest_neighbours(queries, reference, k: int = 1, chunk: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """Euclidean k nearest rows of ``reference`` for each query: distances (N, k) float64,
    indices (N, k), nearest first."""
    q, ref = _check_pair(queries, reference, ("queries", "reference"))
    if not 1 <= k <= ref.shape[0]:
        raise ValueError(f"k must be between 1 and the {ref.shape[0]} reference rows, got k={k}.")
    dists, idxs = [], []
    for _, d in _distance_blocks(q, ref, chunk):  # (C, N_ref)
        top = d.topk(k, dim=1, largest=False)  # sorted, smallest first
        dists.append(top.values)
        idxs.append(top.indices)
    return torch.cat(dists), torch.cat(idxs)  # (N, k), (N, k)


def _kth_neighbour_radius(x: torch.Tensor, k: int, chunk: int, name: str) -> torch.Tensor:
    """Distance from each row to its k-th nearest *other* row (k + 1 neighbours, the row itself first): (N,)."""
    if x.shape[0] <= k:
        raise ValueError(f"{name}: need more than k={k} points for k-nearest-neighbour radii, got {x.shape[0]}.")
    return nearest_neighbours(x, x, k + 1, chunk)[0][:, k]


@torch.no_grad()
def precision_recall(real, fake, k: int = 3, chunk: int = 1024) -> dict[str, float]:
    """Improved precision and recall (Kynkaanniemi et al., 2019), density and coverage (Naeem et al., 2020).

    Each point's ball has radius r(x), the distance to its k-th nearest other point of its own set.
    Precision: share of fake points in some real ball; recall: share of real points in some fake ball;
    density: real balls per fake point, / k (about 1 when the distributions match); coverage: share of
    real balls holding a fake point.
    """
    real, fake = _check_pair(real, fake, ("real", "fake"))
    r_real = _kth_neighbour_radius(real, k, chunk, "real")  # (N,)
    r_fake = _kth_neighbour_radius(fake, k, chunk, "fake")  # (M,)
    balls_holding = torch.zeros(fake.shape[0], dtype=torch.long, device=real.device)  # (M,) real balls per fake point
    covered = torch.zeros(real.shape[0], dtype=torch.bool, device=real.device)  # (N,) real ball holds a fake point
    for start, d in _distance_blocks(fake, real, chunk):  # d: (C, N)
        inside = d <= r_real  # (C, N)  fake j inside real ball i
        balls_holding[start : start + d.shape[0]] = inside.sum(1)
        covered |= inside.any(0)
    in_fake = torch.zeros(real.shape[0], dtype=torch.bool, device=real.device)  # (N,)
    for start, d in _distance_blocks(real, fake, chunk):  # d: (C, M)
        in_fake[start : start + d.shape[0]] = (d <= r_fake).any(1)
    return dict(
        precision=(balls_holding > 0).double().mean().item(),
        recall=in_fake.double().mean().item(),
        density=balls_holding.sum().item() / (k * fake.shape[0]),
        coverage=covered.double().mean().item(),
    )


def _close_pairs(x: torch.Tensor, threshold: float, chunk: int) -> tuple[float, int]:
    """Share of rows with another row closer than ``threshold``, and the number of such unordered pairs."""
    has_close = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)  # (N,)
    n_close = 0
    for start, d in _distance_blocks(x, x, chunk):  # (C, N)
        rows = torch.arange(d.shape[0], device=x.device)
        d[rows, start + rows] = float("inf")  # a point is not its own duplicate
        close = d < threshold  # (C, N)
        has_close[start : start + d.shape[0]] = close.any(1)
        n_close += int(close.sum())
    return has_close.double().mean().item(), n_close // 2  # every pair was counted from both ends


@torch.no_grad()
def memorization_report(samples, train, heldout=None, threshold: float | None = None,
                        percentile: float = 1.0, chunk: int = 1024) -> dict:
    """Nearest-training-image distances d of samples vs held-out real images; copies and duplicates.

    threshold: tau; by default the ``percentile``-th percentile of the held-out distances (needs ``heldout``).
    Returns floats ``threshold``, ``copy_share`` (samples with d < tau), ``sample_median_distance``,
    ``duplicate_share`` (samples with another sample closer than tau), ``duplicate_pairs`` (int); CPU
    tensors ``sample_distances`` (N_s,), ``nearest_train_index`` (N_s,); with ``heldout`` also
    ``heldout_distances``, ``heldout_copy_share`` (<= percentile / 100 by construction),
    ``heldout_median_distance`` and ``heldout_duplicate_share`` (comparable with duplicate_share only
    for equally many images).
    """
    samples, train = _check_pair(samples, train, ("samples", "train"))
    d_s, i_s = nearest_neighbours(samples, train, 1, chunk)  # (N_s, 1) each
    d_s = d_s[:, 0].cpu()
    report: dict = dict(sample_distances=d_s, nearest_train_index=i_s[:, 0].cpu())
    if heldout is not None:
        heldout = _check_pair(train, heldout, ("train", "heldout"))[1]  # on train's device
        d_h = nearest_neighbours(heldout, train, 1, chunk)[0][:, 0].cpu()  # (N_h,)
    if threshold is None:
        if heldout is None:
            raise ValueError("memorization_report needs heldout (real images not used for training) or a threshold.")
        if not 0 < percentile < 100:
            raise ValueError(f"percentile must be in (0, 100), got {percentile}.")
        threshold = torch.quantile(d_h, percentile / 100).item()
    report.update(threshold=float(threshold), copy_share=(d_s < threshold).double().mean().item(),
                  sample_median_distance=d_s.median().item())
    report["duplicate_share"], report["duplicate_pairs"] = _close_pairs(samples, threshold, chunk)
    if heldout is not None:
        report.update(heldout_distances=d_h, heldout_copy_share=(d_h < threshold).double().mean().item(),
                      heldout_median_distance=d_h.median().item(),
                      heldout_duplicate_share=_close_pairs(heldout, threshold, chunk)[0])
    return report


# ----------------------------------------------------------------------------- bootstrap


def bootstrap_ci(statistic: Callable, *arrays, n_boot: int = 200, alpha: float = 0.05,
                 generator: torch.Generator | None = None) -> tuple[float, float, float]:
    """(statistic(*arrays), low, high): percentile bootstrap, resampling the rows of all arrays jointly.

    It measures sampling noise, not bias: duplicated rows raise the FCD, so its interval sits above the
    estimate (notebook 14). Fine for plain averages such as an accuracy."""
    if not arrays:
        raise ValueError("bootstrap_ci needs at least one array to resample.")
    n = len(arrays[0])
    if n == 0 or any(len(a) != n for a in arrays):
        raise ValueError(f"bootstrap_ci: arrays must share a non-zero first dimension, got {[len(a) for a in arrays]}.")
    if n_boot < 1 or not 0 < alpha < 1:
        raise ValueError(f"bootstrap_ci needs n_boot >= 1 and 0 < alpha < 1, got {n_boot} and {alpha}.")

    def take(a, idx: torch.Tensor):
        return a[idx.to(a.device)] if isinstance(a, torch.Tensor) else np.asarray(a)[idx.cpu().numpy()]

    rng_device = generator.device if generator is not None else "cpu"
    boots = []
    for _ in range(n_boot):
        idx = torch.randint(0, n, (n,), generator=generator, device=rng_device)  # (n,) with replacement
        boots.append(float(statistic(*(take(a, idx) for a in arrays))))
    low, high = np.quantile(boots, [alpha / 2, 1 - alpha / 2])
    return float(statistic(*arrays)), float(low), float(high)


# ----------------------------------------------------------------------------- CAS


def small_cnn(n_classes: int = NUM_CLASSES, width: int = 16) -> nn.Sequential:
    """A small CNN for (N, 1, 28, 28) images in [0, 1]: two stride-2 convolutions, 128 hidden units, logits."""
    return nn.Sequential(
        nn.Conv2d(1, width, 3, stride=2, padding=1), nn.ReLU(),  # (N, w, 14, 14)
        nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.ReLU(),  # (N, 2w, 7, 7)
        nn.Flatten(), nn.Linear(2 * width * 7 * 7, 128), nn.ReLU(),  # (N, 128)
        nn.Linear(128, n_classes),  # (N, n_classes)
    )


def _check_labelled(x, y, n_classes: int | None, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, 1, 28, 28) in [0, 1] (device kept) and N integer labels in [0, n_classes) (on the CPU)."""
    x = check_images(x, f"{name}_x", unit_range=True)
    return x, check_labels(torch.as_tensor(y).cpu(), len(x), f"{name}_y", n_classes)


def train_classifier(x, y, steps: int = 1000, batch_size: int = 128, lr: float = 1e-3, n_classes: int = 10,
                     model: nn.Module | None = None, device: torch.device | str | None = None, seed: int = 0,
                     progress: bool = False, amp: bool | None = None) -> nn.Module:
    """Train ``model`` (default: a fresh ``small_cnn``) on images x (N, 1, 28, 28), labels y (N,) with Adam.

    Cross-entropy, ``steps`` steps of ``batch_size``. Weights and batch order depend only on ``seed``; the
    global RNG state is left untouched. ``amp``: mixed precision as ``course_lib.precision`` chooses (None),
    off (False) or also on a CPU (True). Returns the model in eval mode.
    """
    x, y = _check_labelled(x, y, n_classes, "train")
    device = torch.device(device) if device is not None else get_device()
    order_rng = torch.Generator().manual_seed(seed)  # batch order
    # Fork the CUDA generator too (the CPU one always is). fork_rng's device_type must name a backend: torch 2.3
    # (the lowest we declare) rejects None. MPS is not forked: older releases' torch.mps.get_rng_state() takes
    # no device argument, which fork_rng passes (so a run on MPS leaves MPS's global generator reseeded).
    forked = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=forked, device_type="cuda"):
        torch.manual_seed(seed)  # weight initialisation (and dropout, if the model has any)
        model = model if model is not None else small_cnn(n_classes)
        x, y = x.to(device), y.to(device)

        def batches():  # epochs of a seeded permutation
            order = torch.empty(0, dtype=torch.long)
            while True:
                if len(order) < batch_size:
                    order = torch.cat([order, torch.randperm(len(y), generator=order_rng)])
                idx, order = order[:batch_size].to(device), order[batch_size:]
                yield x[idx], y[idx]  # (B, 1, 28, 28), (B,)

        fit(model, torch.optim.Adam(model.parameters(), lr=lr), lambda m, b: F.cross_entropy(m(b[0]), b[1]),
            batches(), steps=steps, device=device, amp=amp, progress=progress, desc="classifier")
    return model.eval()


def accuracy(model: nn.Module, x, y, batch_size: int = 500) -> float:
    """Share of images x (N, 1, 28, 28) whose argmax logit is the label y (N,); runs in eval mode."""
    x, y = _check_labelled(x, y, n_classes=None, name="test")  # any non-negative label
    return train_accuracy(model, x, y, batch_size)


def classification_accuracy_score(train_x, train_y, test_x, test_y, steps: int = 1000,
                                  device: torch.device | str | None = None, seed: int = 0, **kwargs) -> float:
    """CAS (Ravuri & Vinyals, 2019): accuracy on real (test_x, test_y) of a classifier trained only on
    (train_x, train_y), e.g. generated samples; compare with as many real training images."""
    model = train_classifier(train_x, train_y, steps=steps, device=device, seed=seed, **kwargs)
    return accuracy(model, test_x, test_y)


__all__ = [
    "polynomial_kernel", "mmd2_unbiased", "kid", "nearest_neighbours", "precision_recall",
    "memorization_report", "bootstrap_ci", "small_cnn", "train_classifier", "accuracy",
    "classification_accuracy_score",
]
