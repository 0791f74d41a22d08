"""Train the small classifiers behind the Frechet classifier distance (``course_lib/fcd.py``).

    python scripts/train_fcd_classifier.py                      # both datasets (about 5 min on 2 cores)
    python scripts/train_fcd_classifier.py --dataset mnist --epochs 3

Training runs on the CPU with deterministic kernels and a fixed seed (a few minutes per
dataset on two cores). For each dataset it writes, atomically,

    course_lib/weights/fcd_<dataset>.pt      the state_dict (normalisation buffers included)
    course_lib/weights/fcd_weights.json      sha256, test accuracy, parameter count, torch
                                              version, training time and calibration FCDs

The calibration FCDs are computed after training through the public ``course_lib.fcd`` API
(so they also check that the saved file loads and verifies), each with 10,000 images
against the 10,000 test images.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch
import torch.nn.functional as F

from course_lib import fcd as fcd_lib
from course_lib.data import load_fashion_mnist, load_mnist
from course_lib.files import atomic_write, sha256_of
from course_lib.device import seed_everything
from course_lib.train import accuracy, count_parameters

LOADERS = {"mnist": load_mnist, "fashion_mnist": load_fashion_mnist}
N_CALIBRATION = 10_000
# Per-dataset defaults. Digits are not mirror-symmetric, clothes are; Fashion-MNIST items fill
# the frame, so shifting them by more than a pixel costs more accuracy than it buys.
RECIPES = {
    "mnist": {"epochs": 5, "max_shift": 2, "hflip": False},
    "fashion_mnist": {"epochs": 6, "max_shift": 1, "hflip": True},
}


def augment(x: torch.Tensor, generator: torch.Generator, max_shift: int, hflip: bool) -> torch.Tensor:
    """Random translations by up to ``max_shift`` pixels (zero fill), optional horizontal flips."""
    n = x.shape[0]
    if hflip:
        flip = torch.rand(n, generator=generator) < 0.5  # (B,)
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)  # (B, 1, 28, 28)
    if max_shift > 0:
        padded = F.pad(x, (max_shift,) * 4)  # (B, 1, 28 + 2s, 28 + 2s)
        dy = torch.randint(0, 2 * max_shift + 1, (n,), generator=generator)  # (B,)
        dx = torch.randint(0, 2 * max_shift + 1, (n,), generator=generator)  # (B,)
        rows = (dy[:, None] + torch.arange(28))[:, :, None]  # (B, 28, 1)
        cols = (dx[:, None] + torch.arange(28))[:, None, :]  # (B, 1, 28)
        x = padded[torch.arange(n)[:, None, None], 0, rows, cols].unsqueeze(1)  # (B, 1, 28, 28)
    return x


def gaussian_blur(x: torch.Tensor, sigma: float = 1.0) -> torch.Tensor:
    """Blur (N, 1, 28, 28) images with a Gaussian of standard deviation ``sigma`` pixels."""
    radius = int(3 * sigma + 0.5)
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)  # (K,)
    g = torch.exp(-(t**2) / (2 * sigma**2))  # g(t) = exp(-t^2 / 2 sigma^2)
    g = g / g.sum()  # (K,) sums to 1
    kernel = (g[:, None] * g[None, :])[None, None]  # (1, 1, K, K), separable 2-d Gaussian
    return F.conv2d(x, kernel, padding=radius).clamp(0, 1)  # (N, 1, 28, 28)


def train(dataset: str, epochs: int, batch_size: int, lr: float, seed: int) -> dict:
    generator = seed_everything(seed, deterministic=True)
    data = LOADERS[dataset]
    train_set, test_set = data("train"), data("test")
    model = fcd_lib.new_classifier(dataset)
    n_params = count_parameters(model)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps_per_epoch = len(train_set) // batch_size  # the last partial batch is dropped
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * steps_per_epoch)
    max_shift, hflip = RECIPES[dataset]["max_shift"], RECIPES[dataset]["hflip"]
    print(f"[{dataset}] {n_params:,} parameters, {epochs} epochs of {steps_per_epoch} steps, "
          f"{torch.get_num_threads()} threads", flush=True)

    t0 = time.time()
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(train_set), generator=generator)  # (60000,)
        total = 0.0
        for step in range(steps_per_epoch):
            idx = order[step * batch_size : (step + 1) * batch_size]  # (B,)
            x = augment(train_set.x[idx], generator, max_shift=max_shift, hflip=hflip)  # (B, 1, 28, 28)
            loss = F.cross_entropy(model(x), train_set.y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item()
        acc = accuracy(model, test_set.x, test_set.y, batch_size=1000)
        print(f"[{dataset}] epoch {epoch + 1}/{epochs}: train loss {total / steps_per_epoch:.4f}, "
              f"test accuracy {acc:.4f}, {time.time() - t0:.0f} s", flush=True)
    train_seconds = time.time() - t0

    # Save the weights, record their sha256, then reload them through the public API.
    path = fcd_lib.weights_path(dataset)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_write(path) as f:
        torch.save(state, f)
    entry = {
        "file": path.name,
        "sha256": sha256_of(path),
        "size_bytes": path.stat().st_size,
        "n_params": n_params,
        "torch_version": torch.__version__,
        "train_seconds": round(train_seconds, 1),
        "epochs": epochs,
        "batch_size": batch_size,
        "seed": seed,
        "augmentation": {"max_shift": max_shift, "hflip": hflip},
        "threads": torch.get_num_threads(),
    }
    update_manifest(dataset, entry)
    fcd_lib._CACHE.clear()

    entry["test_accuracy"] = round(fcd_lib.classifier_accuracy(test_set.x, test_set.y, dataset, device="cpu"), 4)
    entry["calibration_fcd"] = calibrate(dataset, train_set.x, test_set.x, generator)
    update_manifest(dataset, entry)
    print(f"[{dataset}] wrote {path} ({entry['size_bytes'] / 1e6:.2f} MB), test accuracy "
          f"{entry['test_accuracy']:.4f}, calibration {json.dumps(entry['calibration_fcd'])}", flush=True)
    return entry


def calibrate(dataset: str, train_x: torch.Tensor, test_x: torch.Tensor, generator: torch.Generator) -> dict:
    """FCD of reference image sets (10k each) against the 10k test images."""
    n = N_CALIBRATION
    ref = fcd_lib.image_statistics(test_x[:n], dataset, device="cpu")  # (mu, sigma) of the test set
    candidates = {
        "train_first_10k": train_x[:n],
        "test_blurred_sigma1": gaussian_blur(test_x[:n], sigma=1.0),
        "test_image0_repeated": test_x[:1].expand(n, -1, -1, -1),
        "uniform_noise": torch.rand(n, 1, 28, 28, generator=generator),
    }
    result = {"n_images": n, "reference": "first 10k test images"}
    for name, images in candidates.items():
        mu, sigma = fcd_lib.image_statistics(images, dataset, device="cpu")
        result[name] = round(fcd_lib.frechet_distance(mu, sigma, *ref), 3)
    return result


def update_manifest(dataset: str, entry: dict) -> None:
    """Replace ``dataset``'s entry in fcd_weights.json, keeping the other datasets' entries."""
    path = fcd_lib.WEIGHTS_DIR / fcd_lib.MANIFEST_NAME
    manifest = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    manifest[dataset] = entry
    text = json.dumps(dict(sorted(manifest.items())), indent=2) + "\n"
    with atomic_write(path, "w", encoding="utf-8") as f:
        f.write(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", choices=[*fcd_lib.DATASETS, "all"], default="all")
    parser.add_argument("--epochs", type=int, default=None,
                        help="training epochs (default: 5 for mnist, 6 for fashion_mnist)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=3e-3, help="peak learning rate of the one-cycle schedule")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    torch.set_num_threads(threads)
    datasets = fcd_lib.DATASETS if args.dataset == "all" else (args.dataset,)
    for dataset in datasets:
        epochs = args.epochs if args.epochs is not None else RECIPES[dataset]["epochs"]
        train(dataset, epochs, args.batch_size, args.lr, args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
