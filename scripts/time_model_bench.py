"""Measure this machine's coefficients for scripts/time_model.py, in the setting the notebooks train in
(modules, autograd, Adam), not at a kernel's peak:

* ``mm_flops_per_s``: FLOP/s of training steps of MLP and convolution layers at the course's sizes
  (forward and backward, FLOPs counted by the time model's own counter);
* ``bytes_per_s``: element-wise operators on 3 MB activations (a UNet's 64 x 16 x 28 x 28 feature map);
* ``launch_us``: seconds per operator of a training step of a deep stack of tiny layers, where nothing
  but the per-operator cost (Python, dispatch, autograd) is left.

    python scripts/time_model_bench.py    # about 20 s; prints and writes results/time_model_bench.json
"""
from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import time_model as tm  # noqa: E402


def seconds_per_call(fn, reps: int, warmup: int = 3) -> float:
    """Median of five timings of ``reps`` calls: a typical, not a best, speed."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(reps):
            fn()
        times.append((time.perf_counter() - start) / reps)
    return sorted(times)[2]


def training_step(build, make_input):
    """(step function on this CPU, Work of one step counted on meta) for Adam on sum(model(x))."""
    model = build()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, foreach=False)
    x = make_input("cpu")

    def step():
        opt.zero_grad(set_to_none=True)
        model(x).float().square().mean().backward()
        opt.step()

    work = tm.train_work(build, lambda m: m(make_input("meta")).float().square().mean(), on_gpu=False)
    return step, work


def main() -> None:
    torch.set_num_threads(int(os.environ.get("COURSE_THREADS", "2")))
    torch.manual_seed(0)
    out = {"threads": torch.get_num_threads()}

    # 1) the cost of one operator: 40 layers of 8 -> 8 at batch 4 do almost no arithmetic
    step, work = training_step(lambda: nn.Sequential(*[nn.Sequential(nn.Linear(8, 8), nn.ReLU()) for _ in range(40)]),
                               lambda dev: torch.randn(4, 8, device=dev))
    launch_s = seconds_per_call(step, reps=20) / work.launches
    out["launch_us"] = 1e6 * launch_s

    # 2) memory-bound operators on a 3 MB feature map: relu, add, multiply by a scalar, a GroupNorm
    x, y = torch.randn(64, 16, 28, 28), torch.randn(64, 16, 28, 28)
    norm = nn.GroupNorm(8, 16)
    ops = {"relu": (lambda: torch.relu(x), 2), "add": (lambda: x + y, 3), "scale": (lambda: x * 0.5, 2),
           "group_norm": (lambda: norm(x), 2)}
    rates = {k: n * x.numel() * 4 / seconds_per_call(f, reps=50) for k, (f, n) in ops.items()}
    out["bytes_per_s_each"] = rates
    out["bytes_per_s"] = statistics.median(rates.values())

    # 3) matmul and convolution FLOP/s inside training steps, after taking off the other operators' time
    cases = {
        "mlp 784-512-256 x 128": (lambda: nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 256)),
                                  lambda dev: torch.randn(128, 784, device=dev)),
        "mlp 384-1536-384 x 2048": (lambda: nn.Sequential(nn.Linear(384, 1536), nn.GELU(), nn.Linear(1536, 384)),
                                    lambda dev: torch.randn(2048, 384, device=dev)),
        "conv 32ch 3x3 14x14 x 64": (lambda: nn.Sequential(nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),
                                                           nn.Conv2d(32, 32, 3, padding=1)),
                                     lambda dev: torch.randn(64, 32, 14, 14, device=dev)),
        "conv 16ch 3x3 28x28 x 64": (lambda: nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
                                                           nn.Conv2d(16, 16, 3, padding=1)),
                                     lambda dev: torch.randn(64, 16, 28, 28, device=dev)),
    }
    flops = {}
    for name, (build, make_input) in cases.items():
        step, work = training_step(build, make_input)
        s = seconds_per_call(step, reps=10)
        rest = work.other_bytes / out["bytes_per_s"] + work.launches * launch_s
        flops[name] = work.flops / max(s - rest, 0.1 * s)
    out["mm_flops_per_s_each"] = flops
    out["mm_flops_per_s"] = statistics.median(flops.values())
    print(json.dumps(out, indent=1))
    path = ROOT / "results" / "time_model_bench.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(out, indent=1) + "\n")
    tmp.replace(path)


if __name__ == "__main__":
    main()
