"""Synthetic data for a data-scarce classifier: the pipeline pieces of the capstone (notebook 15).

One section per stage: collect, augment, filter and mix, the experiment (``run_experiment``, then
``summarize`` and ``paired_gains``, with Student-t intervals), cost and data card; the generators are
``course_lib.zoo``'s. Notebook 15 poses the question and teaches the intervals, paired gains and cost.

Usage::

    x, y = scarce_subset(train.x, train.y, per_class=10, seed=0)        # (100, 1, 28, 28), (100,)
    rows = run_experiment(x_all, y_all, test.x, test.y, per_class=(5, 50), seeds=(0, 1),
                          arms={"real": real_only_arm(), "augment": augmentation_arm(200)})
    table = summarize(rows)                       # {(arm, N): (mean, low, high, n_seeds)}
    gains = paired_gains(rows, baseline="real")   # {(arm, N): (mean, low, high, n_seeds)}
"""
from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .checks import check_images, check_labels
from .files import atomic_write
from .metrics import accuracy, train_classifier
from .train import count_flops, eval_mode

AUGMENT_SEED_OFFSET = 10_000  # augmentation_arm's seed = run seed + this: apart from the classifier's

# USD per hour of one device: an ASSUMPTION for the cost arithmetic, edit it to your own prices.
# "cpu": a 2-core cloud VM; "gpu": one rented data-centre GPU. Not quotes from any provider.
PRICE_PER_DEVICE_HOUR = {"cpu": 0.10, "gpu": 2.50}


# ----------------------------------------------------------------------------- collect


def scarce_indices(y: torch.Tensor, per_class: int, seed: int = 0) -> torch.Tensor:
    """Indices of exactly ``per_class`` examples of every class present in y, sorted by class.

    Each class is shuffled in an order that depends only on the seed and the class, and its first
    ``per_class`` are taken: for one seed, scarce_indices(y, 5, s) is a subset of scarce_indices(y, 50, s).
    """
    y = check_labels(y, len(y), "y")
    if per_class < 1:
        raise ValueError(f"per_class must be >= 1, got {per_class}.")
    chosen = []
    for c in torch.unique(y).tolist():
        members = (y == c).nonzero().flatten()  # (n_c,) indices of class c, ascending
        if len(members) < per_class:
            raise ValueError(f"class {c} has only {len(members)} examples, fewer than per_class={per_class}.")
        g = torch.Generator().manual_seed(seed * 1_000_003 + c)  # one order per (seed, class)
        chosen.append(members[torch.randperm(len(members), generator=g)[:per_class]])
    return torch.cat(chosen)  # (n_classes * per_class,)


def scarce_subset(x: torch.Tensor, y: torch.Tensor, per_class: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, y) restricted to exactly ``per_class`` examples per class; see ``scarce_indices``."""
    x = check_images(x, "x")
    idx = scarce_indices(check_labels(y, len(x), "y"), per_class, seed)
    return x[idx], y[idx]


# ----------------------------------------------------------------------------- augment


@dataclass
class AugmentConfig:
    max_rotation_deg: float = 10.0  # rotation angle ~ U(-r, r)
    max_shift_px: float = 2.0  # translation ~ U(-s, s) pixels in x and y
    max_scale: float = 0.1  # zoom factor ~ U(1 - m, 1 + m)
    hflip: bool = False  # mirror left-right with probability 1/2 (fine for clothes, wrong for digits)
    magnitude: float = 1.0  # multiplies rotation, shift and zoom; 0 gives the identity


def affine_matrices(n: int, config: AugmentConfig, generator: torch.Generator | None = None) -> torch.Tensor:
    """n random 2x3 matrices theta for F.affine_grid, in its normalized coordinates [-1, 1]: (n, 2, 3).

    affine_grid reads each *output* pixel p at the input position theta @ (p, 1). Reading at
    R(angle) p / scale - shift shows the content rotated by -angle, zoomed by ``scale`` and moved by
    +shift (the inverse map); all three are symmetric around the identity.
    """
    def uniform(high: float) -> torch.Tensor:  # (n,) ~ U(-high, high)
        return (2 * torch.rand(n, generator=generator) - 1) * high

    m = config.magnitude
    angle = torch.deg2rad(uniform(config.max_rotation_deg * m))  # (n,)
    scale = 1 + uniform(config.max_scale * m)  # (n,)
    # pixels -> [-1, 1] units
    shift = uniform(config.max_shift_px * m * 2 / 28), uniform(config.max_shift_px * m * 2 / 28)
    flip = torch.ones(n)
    if config.hflip:
        flip = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)  # (n,)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([
        torch.stack([cos * flip, -sin, -shift[0]], dim=1),  # x_in = cos x - sin y - dx   (x mirrored if flip)
        torch.stack([sin * flip, cos, -shift[1]], dim=1),  # y_in = sin x + cos y - dy
    ], dim=1)
    return theta  # (n, 2, 3)


def augment(x: torch.Tensor, generator: torch.Generator | None = None,
            config: AugmentConfig | None = None) -> torch.Tensor:
    """Random rotation, zoom, shift (and optional mirror) of each image, bilinear, zeros outside.

    x: (N, 1, 28, 28) in [0, 1] -> same shape, still in [0, 1] (bilinear weights are convex).
    Deterministic given ``generator``; with ``config.magnitude = 0`` (and no flip) it is the identity.
    """
    x = check_images(x, "x")
    config = config or AugmentConfig()
    return warp(x, affine_matrices(len(x), config, generator).to(x))


def warp(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Resample images (N, C, H, W) at the positions theta @ (p, 1) of F.affine_grid, bilinear, zeros outside."""
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)  # (N, H, W, 2) input positions in [-1, 1]
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)  # (N, C, H, W)
    return out.clamp(0, 1)


def augmented_copies(x: torch.Tensor, y: torch.Tensor, per_class: int, generator: torch.Generator | None = None,
                     config: AugmentConfig | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``per_class`` augmented images per class, cycling through that class's real images: the augmentation arm."""
    x = check_images(x, "x")
    y = check_labels(y, len(x), "y")
    picks = []
    for c in torch.unique(y).tolist():
        members = (y == c).nonzero().flatten()  # (n_c,)
        picks.append(members[torch.arange(per_class) % len(members)])  # each real image ~per_class / n_c times
    idx = torch.cat(picks)
    return augment(x[idx], generator, config), y[idx]


# ----------------------------------------------------------------------------- filter and mix


@torch.no_grad()
def label_confidence(images: torch.Tensor, labels: torch.Tensor, classifier: nn.Module,
                     batch_size: int = 500) -> torch.Tensor:
    """p_classifier(label | image) for each pair: (N,) on the CPU; the classifier runs in eval mode."""
    images = check_images(images, "images")
    labels = check_labels(labels, len(images), "labels")
    device = next(classifier.parameters()).device
    probs = []
    with eval_mode(classifier):
        for start in range(0, len(images), batch_size):
            logits = classifier(images[start:start + batch_size].to(device))  # (B, n_classes)
            p = logits.softmax(dim=1).cpu()  # (B, n_classes)
            probs.append(p.gather(1, labels[start:start + batch_size, None]).squeeze(1))  # (B,)
    return torch.cat(probs) if probs else torch.empty(0)


def filter_by_confidence(images: torch.Tensor, labels: torch.Tensor, classifier: nn.Module,
                         threshold: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Keep the samples whose intended label the classifier gives probability >= threshold.

    Returns (kept images, kept labels, keep mask (N,) bool). It keeps what the classifier already
    recognises: a circularity (notebook 15).
    """
    if not 0 <= threshold <= 1:
        raise ValueError(f"threshold is a probability in [0, 1], got {threshold}.")
    keep = label_confidence(images, labels, classifier) >= threshold  # (N,)
    return images[keep], labels[keep], keep


def mix_real_and_extra(x_real: torch.Tensor, y_real: torch.Tensor, x_extra: torch.Tensor, y_extra: torch.Tensor,
                       real_share: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """Real and extra images in one training set, the real ones repeated k times, the least k >= 1 that
    makes them >= real_share of it, so the scarce real data does not drown. No extra images: the real set
    as it is."""
    x_real, x_extra = check_images(x_real, "x_real"), check_images(x_extra, "x_extra")
    y_real, y_extra = check_labels(y_real, len(x_real), "y_real"), check_labels(y_extra, len(x_extra), "y_extra")
    if not 0 < real_share < 1:
        raise ValueError(f"real_share must be in (0, 1), got {real_share}.")
    if len(x_extra) == 0:
        return x_real, y_real
    k = max(1, math.ceil(real_share * len(x_extra) / ((1 - real_share) * len(x_real))))
    return torch.cat([x_real.repeat(k, 1, 1, 1), x_extra.to(x_real)]), torch.cat([y_real.repeat(k), y_extra])


# ----------------------------------------------------------------------------- confidence intervals


def _t_cdf(t: float, df: int, panels: int = 2000) -> float:
    """P(T <= t) = 1/2 + integral_0^t pdf(u) du, by Simpson's rule (the t density is smooth)."""
    log_c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    u = np.linspace(0.0, abs(t), panels + 1)  # (panels + 1,)
    pdf = np.exp(log_c - (df + 1) / 2 * np.log1p(u * u / df))  # Student-t density at u
    weights = np.where(np.arange(panels + 1) % 2 == 1, 4.0, 2.0)
    weights[0] = weights[-1] = 1.0  # Simpson: 1, 4, 2, 4, ..., 2, 4, 1
    half = float((weights * pdf).sum()) * (abs(t) / panels) / 3
    return 0.5 + math.copysign(half, t)


@lru_cache(maxsize=256)
def t_quantile(p: float, df: int) -> float:
    """The p-quantile of Student's t with df degrees of freedom (bisection on the CDF)."""
    if not 0 < p < 1 or df < 1:
        raise ValueError(f"t_quantile needs 0 < p < 1 and df >= 1, got p={p}, df={df}.")
    if p < 0.5:
        return -t_quantile(1 - p, df)
    lo, hi = 0.0, 1.0
    while _t_cdf(hi, df) < p:  # bracket the quantile
        hi *= 2
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _t_cdf(mid, df) < p else (lo, mid)
    return (lo + hi) / 2


def mean_ci(values: Sequence[float], alpha: float = 0.05) -> tuple[float, float, float]:
    """(mean, low, high): the Student-t interval m +- t_{1-alpha/2, k-1} s / sqrt(k); one value gives nan bounds."""
    v = [float(a) for a in values]
    if not v or not 0 < alpha < 1:
        raise ValueError(f"mean_ci needs at least one value and 0 < alpha < 1, got {len(v)} values, alpha={alpha}.")
    k, m = len(v), sum(v) / len(v)
    if k == 1:
        return m, math.nan, math.nan
    s = math.sqrt(sum((a - m) ** 2 for a in v) / (k - 1))  # sample standard deviation
    half = t_quantile(1 - alpha / 2, k - 1) * s / math.sqrt(k)
    return m, m - half, m + half


# ----------------------------------------------------------------------------- experiment


# An arm returns the extra (images, labels) to add to the scarce real set, or None where it has
# nothing at this N (e.g. no generator trained for it). Called as arm(x_real, y_real, per_class, seed).
Arm = Callable[[torch.Tensor, torch.Tensor, int, int], "tuple[torch.Tensor, torch.Tensor] | None"]


def real_only_arm() -> Arm:
    """The baseline: nothing added."""
    return lambda x, y, per_class, seed: (x[:0], y[:0])


def augmentation_arm(extra_per_class: int, config: AugmentConfig | None = None) -> Arm:
    """``extra_per_class`` augmented copies of the real images per class, drawn with the seed."""
    def arm(x, y, per_class, seed):
        generator = torch.Generator().manual_seed(AUGMENT_SEED_OFFSET + seed)
        return augmented_copies(x, y, extra_per_class, generator, config)
    return arm


def pool_arm(pools: dict[int, tuple[torch.Tensor, torch.Tensor]]) -> Arm:
    """A fixed synthetic set per N, e.g. {10: (images, labels)} from a generator trained on the 10-per-class set.

    N without a pool, or with an empty one (a filter that rejected every sample), is skipped: such a
    run would only repeat the real-only baseline.
    """
    def arm(x, y, per_class, seed):
        pool = pools.get(per_class)
        return pool if pool is not None and len(pool[1]) > 0 else None
    return arm


def run_experiment(x: torch.Tensor, y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor, *,
                   per_class: Sequence[int], seeds: Sequence[int], arms: dict[str, Arm], subset_seed: int = 0,
                   classifier_steps: int = 300, batch_size: int = 128, real_share: float = 0.5,
                   device: torch.device | str | None = None, progress: bool = True) -> list[dict]:
    """Train one classifier per (N, arm, seed) and measure its test accuracy: the accuracy-vs-N table.

    The scarce set for N is scarce_subset(x, y, N, subset_seed), the same for every arm and seed,
    so arms are compared on the same real images (paired); the seed changes the classifier's
    initialisation and batch order and the arm's random draws. Returns one dict per run with
    arm, per_class, seed, accuracy, n_real, n_extra, train_seconds.
    """
    x = check_images(x, "x")
    y = check_labels(y, len(x), "y")
    scarce = {n: scarce_subset(x, y, n, subset_seed) for n in per_class}  # one real set per N, shared by all runs
    runs = [(n, name, seed) for n in per_class for name in arms for seed in seeds]
    rows = []
    for n, name, seed in tqdm(runs, desc="classifiers", disable=not progress):
        x_real, y_real = scarce[n]
        extra = arms[name](x_real, y_real, n, seed)
        if extra is None:
            continue
        x_train, y_train = mix_real_and_extra(x_real, y_real, *extra, real_share=real_share)
        with Stopwatch(device) as clock:
            model = train_classifier(x_train, y_train, steps=classifier_steps, batch_size=batch_size,
                                     device=device, seed=seed)
        rows.append(dict(arm=name, per_class=n, seed=seed, accuracy=accuracy(model, test_x, test_y),
                         n_real=len(x_real), n_extra=len(extra[0]), train_seconds=clock.seconds))
    return rows


def summarize(rows: list[dict], alpha: float = 0.05, key: str = "accuracy") -> dict[tuple[str, int], tuple]:
    """{(arm, N): (mean, low, high, n_seeds)} of ``key`` over seeds, with t-intervals."""
    groups: dict[tuple[str, int], list[float]] = {}
    for r in rows:
        groups.setdefault((r["arm"], r["per_class"]), []).append(r[key])
    return {k: (*mean_ci(v, alpha), len(v)) for k, v in groups.items()}


def paired_gains(rows: list[dict], baseline: str = "real", alpha: float = 0.05) -> dict[tuple[str, int], tuple]:
    """{(arm, N): (mean, low, high, n_seeds)} of accuracy(arm) - accuracy(baseline) over the seeds both ran."""
    acc = {(r["arm"], r["per_class"], r["seed"]): r["accuracy"] for r in rows}
    out = {}
    for arm, n in sorted({(r["arm"], r["per_class"]) for r in rows if r["arm"] != baseline}):
        diffs = [acc[(arm, n, s)] - acc[(baseline, n, s)] for (a, m, s) in acc
                 if a == arm and m == n and (baseline, n, s) in acc]
        if diffs:
            out[(arm, n)] = (*mean_ci(diffs, alpha), len(diffs))
    return out


def format_table(summary: dict[tuple[str, int], tuple], arms: Sequence[str], per_class: Sequence[int],
                 scale: float = 100.0, digits: int = 1) -> str:
    """A markdown table, one row per N and one column per arm: 'mean [low, high]' (x scale), '-' where missing."""
    lines = ["| N per class | " + " | ".join(arms) + " |", "|---" * (len(arms) + 1) + "|"]
    for n in per_class:
        cells = []
        for arm in arms:
            if (arm, n) not in summary:
                cells.append("-")
                continue
            m, lo, hi, _ = summary[(arm, n)]
            cells.append(f"{m * scale:.{digits}f}" + ("" if math.isnan(lo) else
                                                        f" [{lo * scale:.{digits}f}, {hi * scale:.{digits}f}]"))
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- cost


class Stopwatch:
    """Wall-clock seconds of a block; waits for queued CUDA work at both ends so GPU time is counted."""

    def __init__(self, device: torch.device | str | None = None):
        self.device = torch.device(device) if device is not None else None
        self.seconds = math.nan

    def _sync(self) -> None:
        if self.device is not None and self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def __enter__(self) -> Stopwatch:
        self._sync()
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self._sync()
        self.seconds = time.perf_counter() - self._start


def flops_per_step(model: nn.Module, inputs: torch.Tensor, loss_fn: Callable | None = None,
                   backward: bool = True) -> int:
    """FLOPs of one step (``train.count_flops``): forward, plus (if ``backward``) backward of
    loss_fn(model(inputs)), or of the output's sum without loss_fn. Gradients are set to None afterwards."""
    def step():
        out = model(inputs)
        if backward:
            (loss_fn(out) if loss_fn is not None else out.sum()).backward()

    flops = count_flops(step)
    model.zero_grad(set_to_none=True)
    return flops


def money(seconds: float, device_kind: str = "cpu", prices: dict[str, float] | None = None) -> float:
    """Dollars for ``seconds`` of one device at the assumed hourly price (see PRICE_PER_DEVICE_HOUR)."""
    prices = PRICE_PER_DEVICE_HOUR if prices is None else prices
    if device_kind not in prices:
        raise ValueError(f"No price for device kind {device_kind!r}; known: {sorted(prices)}. Add it to the prices.")
    return seconds / 3600 * prices[device_kind]


def cost_per_point(cost: float, gain: float) -> float:
    """Cost per accuracy point gained (gain as a fraction, 0.02 = 2 points); inf when nothing was gained."""
    points = gain * 100
    return cost / points if points > 0 else math.inf


# ----------------------------------------------------------------------------- data card


@dataclass
class DataCard:
    """What a synthetic data set is, how it was made, and what it must not be used for."""

    name: str
    source_data: str  # the real data the generator saw, e.g. "Fashion-MNIST train, 10 per class (seed 0)"
    per_class_real: int | None  # N real labelled images per class behind the generator (None: all)
    generator: str  # model family and recipe
    training_steps: int
    training_seconds: float
    device: str
    filter: str  # how samples were filtered, incl. the classifier and threshold
    counts_per_class: dict[str, int]  # synthetic images kept per class
    n_generated: int  # before filtering
    copy_share: float  # share of samples closer to a training image than 99 % of held-out real images are
    intended_use: str
    limits: str
    extra: dict = field(default_factory=dict)  # anything else worth recording (numbers, strings)

    def to_markdown(self) -> str:
        d = asdict(self)
        counts = ", ".join(f"{k}: {v}" for k, v in self.counts_per_class.items())
        rows = [("Source data", d["source_data"]),
                ("Real labelled images per class", "all" if self.per_class_real is None else self.per_class_real),
                ("Generator", d["generator"]), ("Training steps", d["training_steps"]),
                ("Training time", f"{self.training_seconds:.1f} s on {self.device}"), ("Filter", d["filter"]),
                ("Generated / kept", f"{self.n_generated} / {sum(self.counts_per_class.values())}"),
                ("Kept per class", counts),
                ("Memorization (copy share)", f"{self.copy_share:.3f}")]
        rows += [(k, v) for k, v in self.extra.items()]
        table = "\n".join(f"| {k} | {str(v).replace('|', chr(92) + '|')} |" for k, v in rows)  # escape | in cells
        return (f"# Data card: {self.name}\n\n| field | value |\n|---|---|\n{table}\n\n"
                f"## Intended use\n\n{self.intended_use}\n\n## Limits\n\n{self.limits}\n")


def write_data_card(card: DataCard, folder: str | Path) -> tuple[Path, Path]:
    """Write ``<name>.json`` and ``<name>.md`` into folder, each atomically; returns both paths.

    An unserializable field raises before anything is written, leaving no file behind.
    """
    folder = Path(folder)
    text = json.dumps(asdict(card), indent=2, allow_nan=True)  # fails here, before any write
    markdown = card.to_markdown()
    paths = folder / f"{card.name}.json", folder / f"{card.name}.md"
    for path, content in zip(paths, (text, markdown)):
        with atomic_write(path, "w", encoding="utf-8") as f:
            f.write(content)
    return paths


def read_data_card(path: str | Path) -> DataCard:
    """Load a card written by ``write_data_card`` from its JSON file."""
    d = json.loads(Path(path).read_text(encoding="utf-8"))
    known = {f.name for f in fields(DataCard)}
    if set(d) - known or {f.name for f in fields(DataCard) if f.name != "extra"} - set(d):
        raise ValueError(f"{path} is not a data card: fields {sorted(d)}, expected {sorted(known)}.")
    return DataCard(**d)


__all__ = [
    "PRICE_PER_DEVICE_HOUR", "scarce_indices", "scarce_subset", "AugmentConfig", "affine_matrices", "augment", "warp",
    "augmented_copies", "label_confidence", "filter_by_confidence", "mix_real_and_extra", "t_quantile", "mean_ci",
    "Arm", "real_only_arm", "augmentation_arm", "pool_arm", "run_experiment", "summarize", "paired_gains",
    "format_table", "Stopwatch", "flops_per_step", "money", "cost_per_point", "DataCard", "write_data_card",
    "read_data_card",
]
