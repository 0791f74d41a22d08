"""Notebook 08b's side-by-side: pixel-space diffusion trained with the latent pipeline's training compute.

    python scripts/pixel_vs_latent.py                 # notebook 08b's cpu sizes, compute multiples 1 and 3
    python scripts/pixel_vs_latent.py --multiples 1   # only the equal-compute run

Notebook 08b trains, in its ``cpu`` profile, a latent autoencoder (``ae_steps`` steps) and then a
text-conditioned latent UNet (``dm_steps`` steps) on Fashion-MNIST. Its training compute is the FLOPs
of one training step of each (forward and backward, counted by torch's FlopCounterMode: matmuls and
convolutions) times their steps. This script spends the same FLOPs (and, for comparison, a multiple of
them) on notebook 08's pixel-space design: a class-conditional UNet of the same base width on the
28 x 28 images, trained with the same recipe as 08b's denoiser (AdamW, warm-up over a 30th of the run
then cosine decay, gradient clipping at 1, label dropout 0.1, an EMA of decay 0.995, batch 64), and
sampled like 08b (DDIM, 20 steps, eta 0, guidance w = 3; pixels clipped to [-1, 1] as the course's
pixel samplers do). Scored like 08b: FCD of 2,000 class-balanced samples against the same 2,000 random
test images (Fashion-MNIST classifier), and the classifier's accuracy on the requested class.

The one difference in conditioning: the pixel model gets the class label, the latent model a caption
in words, which is the harder input; the comparison favours the pixel model there.

It writes ``results/08b_latent_text_to_image/studies/pixel_equal_compute_cpu.json`` (atomically),
updated after each run so that an interrupted study keeps its finished runs.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from course_lib.data import load_fashion_mnist  # noqa: E402
from course_lib.device import describe_device  # noqa: E402
from course_lib.diffusion import NoiseSchedule, ddim_sample, diffusion_loss  # noqa: E402
from course_lib.fcd import classifier_accuracy, fcd  # noqa: E402
from course_lib.files import atomic_write  # noqa: E402
from course_lib.latent import LatentAEConfig, LatentAutoencoder, latent_ae_loss  # noqa: E402
from course_lib.results import git_commit  # noqa: E402
from course_lib.text_unet import TextUNet, TextUNetConfig  # noqa: E402
from course_lib.train import EMA, cosine_lr, count_flops, count_parameters, fit  # noqa: E402
from course_lib.unet import UNet, UNetConfig  # noqa: E402

# Notebook 08b's cpu sizes (its sizes cell) that this study needs.
SIZES = dict(base_channels=32, batch_size=64, ae_steps=1_200, dm_steps=4_000, dm_lr=2e-3, p_uncond=0.1,
             ema_decay=0.995, sample_steps=20, guidance=3.0, n_fcd=2_000, caption_tokens=20, text_dim=384)
OUT = ROOT / "results" / "08b_latent_text_to_image" / "studies" / "pixel_equal_compute_cpu.json"


def step_flops(loss_of_model) -> int:
    """FLOPs of one training step: the forward pass inside ``loss_of_model()`` and its backward."""
    return count_flops(lambda: loss_of_model().backward())


def latent_pipeline_flops(B: int) -> dict:
    """Training FLOPs of notebook 08b's latent pipeline: autoencoder steps + denoiser steps."""
    ae = LatentAutoencoder(LatentAEConfig())
    ae_step = step_flops(lambda: latent_ae_loss(ae, torch.rand(B, 1, 28, 28))[0])
    net = TextUNet(TextUNetConfig(base_channels=SIZES["base_channels"]))
    words = torch.randn(B, SIZES["caption_tokens"], SIZES["text_dim"])
    dm_step = step_flops(lambda: net(torch.randn(B, 4, 7, 7), torch.randint(0, 1000, (B,)), words).square().mean())
    return {"autoencoder_step_gflops": ae_step / 1e9, "denoiser_step_gflops": dm_step / 1e9,
            "autoencoder_tflops": ae_step * SIZES["ae_steps"] / 1e12,
            "denoiser_tflops": dm_step * SIZES["dm_steps"] / 1e12,
            "total_tflops": (ae_step * SIZES["ae_steps"] + dm_step * SIZES["dm_steps"]) / 1e12}


def pixel_run(steps: int, train, test_ref: torch.Tensor, seed: int = 1) -> dict:
    """Train the pixel UNet for ``steps`` with 08b's denoiser recipe; sample and score like 08b."""
    B = SIZES["batch_size"]
    schedule = NoiseSchedule.linear(1000)
    torch.manual_seed(seed)
    model = UNet(UNetConfig(base_channels=SIZES["base_channels"], num_classes=10))
    ema = EMA(model, SIZES["ema_decay"])
    opt = torch.optim.AdamW(model.parameters(), lr=SIZES["dm_lr"], weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: cosine_lr(s, steps, max(1, steps // 30)))
    g = torch.Generator().manual_seed(3)
    x0 = 2 * train.x - 1  # (N, 1, 28, 28) in [-1, 1]

    def batches():
        while True:
            idx = torch.randint(len(x0), (B,), generator=g)
            yield x0[idx], train.y[idx]

    start = time.perf_counter()
    fit(model, opt, lambda m, b: diffusion_loss(m, schedule, b[0], b[1], p_uncond=SIZES["p_uncond"]), batches(),
        steps=steps, device="cpu", scheduler=sched, grad_clip=1.0, ema=ema, log_every=max(1, steps // 100),
        desc=f"pixel UNet, {steps} steps")
    train_s = time.perf_counter() - start
    net = ema.model_copy(model).eval()
    labels = torch.arange(SIZES["n_fcd"]) % 10  # balanced classes
    start = time.perf_counter()
    images = torch.cat([
        ddim_sample(net, schedule, (len(chunk), 1, 28, 28), steps=SIZES["sample_steps"], eta=0.0, labels=chunk,
                    guidance_scale=SIZES["guidance"], clip_x0=True, generator=torch.Generator().manual_seed(8 + i),
                    progress=False)
        for i, chunk in enumerate(labels.split(250))])
    images = ((images + 1) / 2).clamp(0, 1)
    sample_s = time.perf_counter() - start
    return {"steps": steps, "train_s": round(train_s, 1), "sampling_s": round(sample_s, 1),
            "fcd": round(fcd(images, test_ref, dataset="fashion_mnist"), 2),
            "class_accuracy": round(classifier_accuracy(images, labels, dataset="fashion_mnist"), 4),
            "n": len(labels), "parameters": count_parameters(model)}


def save(record: dict) -> None:
    OUT.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(OUT, mode="w", encoding="utf-8") as f:
        json.dump(record, f, indent=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--multiples", default="1,3", help="compute multiples of the latent pipeline to spend")
    args = parser.parse_args()
    torch.set_num_threads(2)
    train, test = load_fashion_mnist("train"), load_fashion_mnist("test")
    shuffled = torch.randperm(len(test.x), generator=torch.Generator().manual_seed(0))
    test_ref = test.x[shuffled[: SIZES["n_fcd"]]]  # notebook 08b's FCD reference set
    B = SIZES["batch_size"]
    latent = latent_pipeline_flops(B)
    probe = UNet(UNetConfig(base_channels=SIZES["base_channels"], num_classes=10))
    pixel_step = step_flops(lambda: probe(torch.randn(B, 1, 28, 28), torch.randint(0, 1000, (B,)),
                                          torch.randint(0, 10, (B,))).square().mean())
    record = {"study": "08b pixel-space diffusion at the latent pipeline's training compute", "sizes": SIZES,
              "latent": latent, "pixel_step_gflops": pixel_step / 1e9, "device": describe_device(torch.device("cpu")),
              "platform": platform.platform(), "torch_version": torch.__version__, "commit": git_commit(),
              "runs": {}}
    if OUT.is_file():
        record["runs"] = json.loads(OUT.read_text())["runs"]
    print(json.dumps({k: record[k] for k in ("latent", "pixel_step_gflops")}, indent=1), flush=True)
    for multiple in [float(m) for m in args.multiples.split(",")]:
        key = f"{multiple:g}x"
        if key in record["runs"]:
            print(f"{key}: done already: {record['runs'][key]}")
            continue
        steps = round(multiple * latent["total_tflops"] * 1e12 / pixel_step)
        run = pixel_run(steps, train, test_ref)
        record["runs"][key] = {"compute_multiple": multiple, "train_tflops": round(steps * pixel_step / 1e12, 2), **run}
        print(f"{key}: {record['runs'][key]}", flush=True)
        save(record)
    save(record)


if __name__ == "__main__":
    main()
