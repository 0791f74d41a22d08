"""Measure this machine's coefficients for scripts/time_model.py from training steps of the course's own
building blocks, timed here and counted by the time model (on meta tensors):

    probe                         what dominates it
    40 tiny Linear(8, 8) layers   the per-operator cost (Python, dispatch, autograd, optimizer loop)
    GroupNorm + SiLU stack        element-wise memory traffic on 3 MB feature maps
    MLP autoencoder (batch 128)   matrix products
    DCGAN step (width 32)         convolutions, BatchNorm
    UNet step (base 16, batch 32) convolutions, GroupNorm, attention, gradient clipping, EMA
    GPT step (4 x 128, T = 64)    attention and matrix products

The three coefficients (FLOP/s, bytes/s, seconds per operator) are the least-squares fit, in log ratios,
of the model's step time to the measured ones: one set for the machine, fitted on these probes only (not
on any notebook's recorded time, which ``scripts/time_model.py`` then predicts as a check).

    python scripts/time_model_bench.py    # about 40 s; prints and writes results/time_model_bench.json
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import time_model as tm  # noqa: E402


def seconds_per_call(fn, reps: int, warmup: int = 2) -> float:
    """Median of three timings of ``reps`` calls: a typical, not a best, speed."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(reps):
            fn()
        times.append((time.perf_counter() - start) / reps)
    return sorted(times)[1]


def probe(build, loss, clip=False, ema=False, reps=5):
    """(measured seconds, counted Work) of one fit-like training step: Adam, optional clipping and EMA."""
    from course_lib.train import EMA

    model = build()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, foreach=False)
    average = EMA(model) if ema else None

    def step():
        opt.zero_grad(set_to_none=True)
        loss(model, "cpu").backward()
        if clip:
            nn.utils.clip_grad_norm_(model.parameters(), 1.0, foreach=False)
        opt.step()
        if average is not None:
            average.update(model)

    seconds = seconds_per_call(step, reps)
    work = tm.train_work(build, lambda m: loss(m, "meta"), on_gpu=False, clip=clip, ema=ema)
    return seconds, work


def probes() -> dict:
    from course_lib.autoencoders import AEConfig, Autoencoder
    from course_lib.gan import Discriminator, GANConfig, Generator
    from course_lib.gpt import GPT, GPTConfig
    from course_lib.unet import UNet, UNetConfig

    randn = lambda dev, *shape: torch.randn(*shape, device=dev)  # noqa: E731
    randint = lambda dev, high, *shape: torch.randint(0, high, shape, device=dev)  # noqa: E731
    gpt_cfg = GPTConfig(vocab_size=65, n_layer=4, n_head=4, n_embd=128, block_size=64, bias=False, activation="gelu")
    out = {
        "tiny layers": probe(lambda: nn.Sequential(*[nn.Sequential(nn.Linear(8, 8), nn.ReLU()) for _ in range(40)]),
                             lambda m, dev: m(randn(dev, 4, 8)).square().mean(), reps=20),
        "groupnorm stack": probe(lambda: nn.Sequential(*[nn.Sequential(nn.GroupNorm(8, 16), nn.SiLU())
                                                         for _ in range(6)]),
                                 lambda m, dev: m(randn(dev, 64, 16, 28, 28)).square().mean()),
        "mlp autoencoder": probe(lambda: Autoencoder(AEConfig(hidden=(512, 256), latent_dim=32)),
                                 lambda m, dev: (m(randn(dev, 128, 1, 28, 28)) ** 2).mean(), reps=20),
        "unet": probe(lambda: UNet(UNetConfig(base_channels=16)),
                      lambda m, dev: (m(randn(dev, 32, 1, 28, 28), randint(dev, 1000, 32)) ** 2).mean(),
                      clip=True, ema=True),
        "gpt": probe(lambda: GPT(gpt_cfg), lambda m, dev: m(randint(dev, 65, 32, 64), randint(dev, 65, 32, 64))[1]),
    }
    g_cfg = GANConfig(latent_dim=64, width=32)
    out["dcgan"] = probe(lambda: nn.ModuleList([Generator(g_cfg), Discriminator(g_cfg)]),
                                       lambda m, dev: m[1](m[0](randn(dev, 64, 64))).square().mean())
    return out


def fit(results: dict) -> dict:
    """FLOP/s, bytes/s and seconds per operator minimizing the squared log ratios of predicted to measured."""
    from scipy.optimize import least_squares

    rows = list(results.values())

    def residuals(log_c):
        flops, bandwidth, launch_s = np.exp(log_c)
        d = tm.Device("cpu", flops, flops, bandwidth, 1e6 * launch_s, setup_s=0.0, half_bytes=False)
        return [np.log(work.seconds(d) / s) for s, work in rows]

    start = np.log([1e11, 2e10, 5e-6])
    log_c = least_squares(residuals, start).x
    flops, bandwidth, launch = np.exp(log_c)
    return {"mm_flops_per_s": float(flops), "bytes_per_s": float(bandwidth), "launch_us": float(1e6 * launch),
            "max_abs_log_ratio": float(np.max(np.abs(residuals(log_c))))}


def main() -> None:
    torch.set_num_threads(int(os.environ.get("COURSE_THREADS", "2")))
    torch.manual_seed(0)
    results = probes()
    out = {"threads": torch.get_num_threads(), **fit(results),
           "probes": {k: {"measured_ms": 1e3 * s, "gflops": w.flops / 1e9, "mb": (w.mm_bytes + w.other_bytes) / 1e6,
                          "launches": w.launches} for k, (s, w) in results.items()}}
    print(json.dumps(out, indent=1))
    path = ROOT / "results" / "time_model_bench.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(out, indent=1) + "\n")
    tmp.replace(path)


if __name__ == "__main__":
    main()
