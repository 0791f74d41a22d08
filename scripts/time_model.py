"""How long does each notebook take on a T4, an L4, an A100 or an H100? A time model from counted work.

    python scripts/time_model.py              # count, predict, write results/time_model.json (about a minute)
    python scripts/time_model.py --print      # the same, and print the tables

For every notebook, ``LOOPS`` lists the loops that dominate its run time: which network, which batch, how
many steps or sampling calls. The sizes come from the notebook's own sizes cell, executed for the profile
(``notebook_sizes``), never from copied numbers. One step of each loop is run on the ``meta`` device (shapes
only, no arithmetic) under two counters:

* FLOPs: torch's ``FlopCounterMode`` (matrix products and convolutions, 2 FLOPs per multiply-add);
* bytes and launches: ``OpCounter`` below, one launch per aten operator that does work (views are free) and
  the bytes of its input and output tensors.

A device turns the counts into seconds::

    step_s = max(flops / achieved_flops, bytes / achieved_bandwidth) + launches * launch_overhead
    notebook_s = setup_s + sum over loops of steps * step_s      (a loop with a time budget: min(budget, that))

The GPU coefficients are the vendors' peak numbers times an assumed achieved fraction (stated in ``DEVICES``):
estimates until a real run calibrates them. The CPU coefficients come from ``scripts/time_model_bench.py``
(training steps of the course's own blocks, fitted once for the machine); ``cpu_check`` compares the model's
``cpu`` predictions with the records' measured wall times, a test of the model itself. That test is only fair
on the machine that made the records: ``--retimed`` adds wall times of cpu runs re-measured where the bench ran
(``scripts/retime_cpu.py``).

Left out everywhere: data loading and tokenizing (inside ``setup_s``), plots, FCD feature extraction and
other evaluation passes that are small next to training, and Python work between operators beyond the
per-launch overhead.
"""
from __future__ import annotations

import argparse
import functools
import json
import math
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import SimpleNamespace
from collections.abc import Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

OUT = ROOT / "results" / "time_model.json"
BENCH = ROOT / "results" / "time_model_bench.json"
RETIMED = ROOT / "results" / "time_model_retimed.json"
T4_BUDGET_MIN = 15.0  # a free Colab T4 should finish each notebook in about this


# ----------------------------------------------------------------------------- devices


@dataclass(frozen=True)
class Device:
    """Achieved (not peak) rates of one machine for the course's eager PyTorch code."""

    name: str
    amp_flops: float  # FLOP/s of matmuls and convolutions under the course's autocast (fp16 / bf16)
    fp32_flops: float  # FLOP/s without autocast (samplers, evaluation, loops with amp=False)
    bandwidth: float  # bytes/s of memory traffic
    launch_us: float  # fixed cost of one operator: Python, dispatch and the kernel launch
    setup_s: float  # per notebook: start, imports, data loading, plots and small cells
    half_bytes: bool  # autocast moves matmul and convolution operands as 16-bit numbers
    source: str = ""


def gpu(name, peak_amp_tflops, peak_fp32_tflops, peak_gb_s, launch_us, source, flops_share=0.3, bw_share=0.7):
    """A GPU from its data-sheet peaks times the achieved shares (assumed: small eager models reach about 30% of
    the tensor-core peak and 70% of the memory bandwidth); launch_us includes the host's Python overhead."""
    return Device(name, peak_amp_tflops * 1e12 * flops_share, peak_fp32_tflops * 1e12 * flops_share,
                  peak_gb_s * 1e9 * bw_share, launch_us, setup_s=60.0, half_bytes=True,
                  source=f"{source}; achieved = {flops_share:.0%} of peak FLOP/s, {bw_share:.0%} of peak bandwidth "
                         f"(assumed until calibrated)")


DEVICES = {
    # compute capability 7.5: fp16 autocast + GradScaler (course_lib.precision)
    "T4": gpu("T4", 65, 8.1, 320, 20, "NVIDIA T4 data sheet: 65 TFLOPS fp16 tensor, 8.1 fp32, 320 GB/s; "
              "launch 20 us on Colab's 2-vCPU host"),
    # compute capability >= 8.0: bf16 autocast
    "L4": gpu("L4", 121, 30.3, 300, 12, "NVIDIA L4 data sheet: 121 TFLOPS bf16 dense, 30.3 fp32, 300 GB/s"),
    "A100": gpu("A100", 312, 19.5, 1555, 10, "NVIDIA A100 40GB data sheet: 312 TFLOPS bf16 dense, 19.5 fp32, "
                "1555 GB/s"),
    "H100": gpu("H100", 989, 67, 3350, 8, "NVIDIA H100 SXM data sheet: 989 TFLOPS bf16 dense, 67 fp32, 3350 GB/s"),
}


def cpu_device(bench: dict) -> Device:
    """This machine, from scripts/time_model_bench.py (fp32: the course does not autocast on a CPU)."""
    return Device("cpu", bench["mm_flops_per_s"], bench["mm_flops_per_s"], bench["bytes_per_s"], bench["launch_us"],
                  setup_s=10.0, half_bytes=False,  # kernel start, imports, data: a few seconds each
                  source=f"measured by scripts/time_model_bench.py ({bench['threads']} threads)")


# ----------------------------------------------------------------------------- counting


@dataclass
class Work:
    """What one step of a loop does."""

    flops: float = 0.0  # matmul + convolution FLOPs
    mm_bytes: float = 0.0  # bytes in and out of the matmuls and convolutions (fp32 as counted)
    other_bytes: float = 0.0  # bytes of every other operator
    launches: int = 0  # operators that do work (views and metadata ops excluded)

    def seconds(self, d: Device, amp: bool = True) -> float:
        """Matmuls and convolutions at the slower of compute and memory; every other operator moves memory."""
        mm_s = max(self.flops / (d.amp_flops if amp else d.fp32_flops),
                   self.mm_bytes * (0.5 if amp and d.half_bytes else 1.0) / d.bandwidth)
        return mm_s + self.other_bytes / d.bandwidth + self.launches * d.launch_us * 1e-6


FREE_OPS = {"detach", "lift_fresh", "alias", "_local_scalar_dense", "_record_function_enter_new",
            "_record_function_exit", "set_", "resize_", "empty", "empty_like", "empty_strided", "_unsafe_view"}
MATMUL_OPS = {"mm", "addmm", "bmm", "baddbmm", "convolution", "convolution_backward",
              "_scaled_dot_product_flash_attention", "_scaled_dot_product_efficient_attention",
              "_scaled_dot_product_attention_math", "_efficient_attention_backward", "_flash_attention_backward",
              "_scaled_dot_product_flash_attention_backward", "_scaled_dot_product_efficient_attention_backward"}


def _tensor_bytes(obj) -> int:
    import torch

    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, (list, tuple)):
        return sum(_tensor_bytes(o) for o in obj)
    return 0


def op_counter():
    """A TorchDispatchMode that adds up launches and bytes per aten operator (a factory: torch is imported late)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class OpCounter(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.work = Work()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            out = func(*args, **kwargs)
            name = func.overloadpacket.__name__
            if func.is_view or name in FREE_OPS:
                return out
            moved = _tensor_bytes(args) + _tensor_bytes(list(kwargs.values())) + _tensor_bytes(out)
            self.work.launches += 1
            if name in MATMUL_OPS:
                self.work.mm_bytes += moved
            else:
                self.work.other_bytes += moved
            return out

    return OpCounter()


def count(fn: Callable[[], object]) -> Work:
    """Work of one call of ``fn`` (run it on meta tensors)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = op_counter()
    with FlopCounterMode(display=False) as flops, counter:
        fn()
    counter.work.flops = float(flops.get_total_flops())
    return counter.work


def meta(build: Callable):
    """Build a module (or several) on the meta device: no memory, no initialisation cost."""
    import torch

    with torch.device("meta"):
        return build()


def rand(*shape):
    import torch

    return torch.randn(*shape, device="meta")


def ints(high, *shape):
    import torch

    return torch.randint(0, high, shape, device="meta")


def optimizer(params, on_gpu: bool, adamw: bool = True):
    """Adam(W) as the notebooks make it: the multi-tensor (foreach) version on a GPU, one tensor at a time on a CPU."""
    import torch

    cls = torch.optim.AdamW if adamw else torch.optim.Adam
    return cls([p for p in params if p.requires_grad], lr=1e-3, foreach=on_gpu)


def clip_gradients(model, on_gpu: bool) -> None:
    """``nn.utils.clip_grad_norm_(params, 1.0)``: its multi-tensor kernels on a GPU, written out (the function
    itself refuses foreach on meta tensors), one tensor at a time on a CPU."""
    import torch

    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if not on_gpu:
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0, foreach=False)
        return
    total = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
    torch._foreach_mul_(grads, (1.0 / (total + 1e-6)).clamp(max=1.0))


def train_work(build, loss, on_gpu: bool, clip: bool = False, ema: bool = False) -> Work:
    """One ``course_lib.train.fit`` step: zero grads, forward + loss, backward, (clip,) Adam step, (EMA update)."""
    from course_lib.train import EMA

    model = meta(build)
    opt = optimizer(model.parameters(), on_gpu)
    average = EMA(model) if ema else None

    def step():
        opt.zero_grad(set_to_none=True)
        loss(model).backward()
        if clip:
            clip_gradients(model, on_gpu)
        opt.step()
        if average is not None:
            average.update(model)

    step()  # the first step creates Adam's state: not typical
    return count(step)


def forward_work(build, run) -> Work:
    """One forward pass without gradients (sampling, evaluation)."""
    import torch

    model = meta(build).eval()
    with torch.no_grad():
        return count(lambda: run(model))


def gan_work(g_build, d_build, batch, latent, on_gpu, n_critic=1, gp=False, labels=False, shape=(1, 28, 28)) -> Work:
    """One ``course_lib.gan.train_gan`` step: n_critic discriminator steps (with the gradient penalty) and one
    generator step, on (B, 1, 28, 28) images."""
    import torch
    from course_lib.gan import discriminator_loss, generator_loss, gradient_penalty

    G, D = meta(g_build), meta(d_build)
    opt_g, opt_d = optimizer(G.parameters(), on_gpu), optimizer(D.parameters(), on_gpu)
    y = ints(10, batch) if labels else None
    kind = "wasserstein" if gp else "non_saturating"

    def step():
        for _ in range(n_critic):
            x = rand(batch, *shape)
            fake = G(rand(batch, latent), y).detach()
            d_loss = discriminator_loss(D(x, y), D(fake, y), kind)
            if gp:
                d_loss = d_loss + 10 * gradient_penalty(D, x, fake, y)[0]
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
        g_loss = generator_loss(D(G(rand(batch, latent), y), y), kind)
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()

    step()
    with torch.enable_grad():
        return count(step)


def ddim_work(build, batch, shape, guided=False, **forward_kw) -> Work:
    """One sampler step: the network on (B, ...) noisy images ((2B, ...) with guidance) plus the DDIM update."""
    import torch

    model = meta(build).eval()
    n = 2 * batch if guided else batch

    def step():
        x = rand(batch, *shape)
        eps = model(rand(n, *shape), ints(1000, n), **{k: v(n) for k, v in forward_kw.items()})
        if guided:
            cond, uncond = eps.chunk(2)
            eps = uncond + 2.0 * (cond - uncond)
        x0 = ((x - 0.5 * eps) * 1.1).clamp(-1, 1)  # predict x0, clip, re-derive eps, step: about this many ops
        eps = (x - 0.9 * x0) * 1.2
        return 0.9 * x0 + 0.4 * eps

    with torch.no_grad():
        return count(step)


# ----------------------------------------------------------------------------- sizes


def notebook_path(stem: str) -> Path:
    return ROOT / "notebooks" / f"{stem}.ipynb"


@functools.cache
def notebook_sizes(stem: str, profile: str):
    """Execute only the notebook's sizes cell for ``profile``; returns its ``cfg`` (a course_lib Sizes)."""
    import contextlib
    import io

    from course_lib import profiles

    cells = json.loads(notebook_path(stem).read_text(encoding="utf-8"))["cells"]
    sources = ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]
    found = [s for s in sources if "course_lib.sizes(" in s]
    if len(found) != 1:
        raise ValueError(f"{stem}: expected one code cell with course_lib.sizes(...), found {len(found)}.")
    shim = SimpleNamespace(sizes=functools.partial(_sizes_without_dry_run, profile=profile))
    namespace = {"course_lib": shim, "session": SimpleNamespace(device="cpu")}
    with contextlib.redirect_stdout(io.StringIO()):
        exec(compile(found[0], f"{stem} sizes cell", "exec"), namespace)
    cfg = namespace["cfg"]
    if not isinstance(cfg, profiles.Sizes):
        raise TypeError(f"{stem}: the sizes cell must assign cfg = course_lib.sizes(...).")
    return cfg


def _sizes_without_dry_run(*args, profile, **kwargs):
    from course_lib import profiles

    saved = os.environ.pop(profiles.DRY_RUN_ENV, None)
    try:
        return profiles.sizes(*args, profile=profile, **kwargs)
    finally:
        if saved is not None:
            os.environ[profiles.DRY_RUN_ENV] = saved


# ----------------------------------------------------------------------------- the loops of each notebook


@dataclass
class Loop:
    name: str
    steps: float  # how many times ``work`` runs
    work: Callable[[bool], Work]  # on_gpu -> Work of one step
    amp: bool = True  # under autocast on a GPU (training); False: fp32 (samplers, evaluation, amp=False)
    host: bool = False  # runs on the CPU even when a GPU is there (device="cpu" in the notebook)
    budget_s: float | None = None  # stops at this many seconds of training (a wall-clock budget)


def cached(fn):
    """Memoize a work function on its arguments (loops share networks)."""
    return functools.lru_cache(maxsize=None)(fn)


@cached
def ae_step(hidden, latent, batch, on_gpu):
    from course_lib.autoencoders import AEConfig, Autoencoder, reconstruction_loss

    x = rand(batch, 1, 28, 28).clamp(0, 1)
    return train_work(lambda: Autoencoder(AEConfig(hidden=tuple(hidden), latent_dim=latent)),
                      lambda m: reconstruction_loss(m, x), on_gpu)


@cached
def vae_step(hidden, latent, n_layers, batch, on_gpu):
    from course_lib.vae import VAE, VAEConfig, elbo

    x = rand(batch, 784).clamp(0, 1)
    return train_work(lambda: VAE(VAEConfig(hidden=hidden, latent_dim=latent, n_layers=n_layers)),
                      lambda m: -elbo(m, x).elbo.mean(), on_gpu)


@cached
def vae_iwae(hidden, latent, n_layers, n, on_gpu):
    """Decoder + encoder on n samples of z (one chunk of the IWAE bound)."""
    from course_lib.vae import VAE, VAEConfig

    return forward_work(lambda: VAE(VAEConfig(hidden=hidden, latent_dim=latent, n_layers=n_layers)),
                        lambda m: (m.decode(rand(n, latent)), m.encode(rand(n, 784))))


@cached
def dcgan_step(width, latent, batch, on_gpu, num_classes=0, n_critic=1, gp=False, d_norm="batch"):
    from course_lib.gan import Discriminator, GANConfig, Generator

    c = GANConfig(latent_dim=latent, width=width, num_classes=num_classes, d_norm=d_norm)
    return gan_work(lambda: Generator(c), lambda: Discriminator(c), batch, latent, on_gpu, n_critic, gp,
                    labels=num_classes > 0)


@cached
def mlp_gan_step(latent, batch, on_gpu):
    from course_lib.gan import MLPDiscriminator, MLPGenerator

    return gan_work(lambda: MLPGenerator(latent_dim=latent), lambda: MLPDiscriminator(), batch, latent, on_gpu,
                    shape=(2,))


@cached
def gan_sample(width, latent, batch, num_classes=0):
    from course_lib.gan import GANConfig, Generator

    c = GANConfig(latent_dim=latent, width=width, num_classes=num_classes)
    labels = ints(10, batch) if num_classes else None
    return forward_work(lambda: Generator(c), lambda g: g(rand(batch, latent), labels))


@cached
def cyclegan_step(g_width, n_res, d_width, batch, on_gpu, lambda_cycle=None):
    from course_lib.cyclegan import CycleGAN, CycleGANConfig, discriminator_step, generator_step

    model = meta(lambda: CycleGAN(CycleGANConfig(g_width=g_width, n_res_blocks=n_res, d_width=d_width)))
    opt_g, opt_d = optimizer(model.generators(), on_gpu, adamw=False), optimizer(model.discriminators(), on_gpu, False)
    weights = {} if lambda_cycle is None else {"lambda_cycle": lambda_cycle}

    def step():
        a, b = rand(batch, 1, 28, 28), rand(batch, 1, 28, 28)
        _, (fake_a, fake_b) = generator_step(model, opt_g, a, b, **weights)
        discriminator_step(model, opt_d, a, b, fake_a, fake_b)

    step()
    return count(step)


def unet(base, num_classes=None, in_channels=1):
    from course_lib.unet import UNet, UNetConfig

    return lambda: UNet(UNetConfig(in_channels=in_channels, base_channels=base, num_classes=num_classes))


@cached
def unet_step(base, batch, on_gpu, num_classes=None, shape=(1, 28, 28), ema=True):
    y = ints(10, batch) if num_classes else None
    return train_work(unet(base, num_classes, shape[0]),
                      lambda m: ((m(rand(batch, *shape), ints(1000, batch), y) - rand(batch, *shape)) ** 2).mean(),
                      on_gpu, clip=True, ema=ema)


@cached
def unet_sample(base, batch, num_classes=None, guided=False, shape=(1, 28, 28)):
    kw = {"labels": lambda n: ints(10, n)} if num_classes else {}
    return ddim_work(unet(base, num_classes, shape[0]), batch, shape, guided, **kw)


@cached
def latent_ae_step(batch, on_gpu):
    import torch.nn.functional as F
    from course_lib.latent import LatentAEConfig, LatentAutoencoder

    x = rand(batch, 1, 28, 28).clamp(0, 1)

    def loss(m):
        logits, mu, logvar = m(x)
        return F.binary_cross_entropy_with_logits(logits, x) + 1e-4 * (mu ** 2 + logvar.exp() - logvar).mean()

    return train_work(lambda: LatentAutoencoder(LatentAEConfig()), loss, on_gpu)


def text_unet(base):
    import torch
    from course_lib.text_unet import TextUNet, TextUNetConfig

    def build():
        model = TextUNet(TextUNetConfig(base_channels=base))
        # its input checks read values (an all-padding caption), which meta tensors do not have: every token is real
        model._check_inputs = lambda x, t, context, mask: (t, context, torch.ones(context.shape[:2], dtype=torch.bool,
                                                                                   device=x.device))
        return model

    return build


@cached
def text_unet_step(base, batch, on_gpu, words=20):
    # no padding mask: every caption token counts (the mask's check would read values, which meta tensors lack)
    return train_work(text_unet(base), lambda m: ((m(rand(batch, 4, 7, 7), ints(1000, batch), rand(batch, words, 384))
                                                   - rand(batch, 4, 7, 7)) ** 2).mean(), on_gpu, ema=True)


@cached
def text_unet_sample(base, batch, words=20):
    import torch

    model = meta(text_unet(base)).eval()
    n = 2 * batch  # classifier-free guidance: caption and null caption in one batch

    def step():
        eps = model(rand(n, 4, 7, 7), ints(1000, n), rand(n, words, 384))
        cond, uncond = eps.chunk(2)
        return rand(batch, 4, 7, 7) * 0.9 + uncond + 3.0 * (cond - uncond)

    with torch.no_grad():
        return count(step)


def gpt(vocab, n_layer, n_head, n_embd, block, dropout=0.0):
    from course_lib.gpt import GPT, GPTConfig

    return lambda: GPT(GPTConfig(vocab_size=vocab, n_layer=n_layer, n_head=n_head, n_embd=n_embd, block_size=block,
                                 dropout=dropout, bias=False, activation="gelu"))


@cached
def gpt_step(vocab, n_layer, n_head, n_embd, block, batch, on_gpu, dropout=0.0, clip=False):
    return train_work(gpt(vocab, n_layer, n_head, n_embd, block, dropout),
                      lambda m: m(ints(vocab, batch, block), ints(vocab, batch, block))[1], on_gpu, clip=clip)


@cached
def gpt_eval(vocab, n_layer, n_head, n_embd, block, batch):
    return forward_work(gpt(vocab, n_layer, n_head, n_embd, block),
                        lambda m: m(ints(vocab, batch, block), ints(vocab, batch, block)))


def seq2seq(vocab, d_model, n_layer, n_head, d_ff, **variant):
    from course_lib.seq2seq import Seq2SeqConfig, Seq2SeqTransformer

    return lambda: Seq2SeqTransformer(Seq2SeqConfig(src_vocab_size=vocab, tgt_vocab_size=vocab, d_model=d_model,
                                                    n_head=n_head, n_enc_layer=n_layer, n_dec_layer=n_layer,
                                                    d_ff=d_ff, **variant))


SEQ2SEQ_LEN = 18  # Multi30k, notebook 11's output: 14.0 English and 18.0 French tokens per sentence (mean)


@cached
def seq2seq_step(vocab, d_model, n_layer, n_head, d_ff, batch, on_gpu):
    import torch.nn.functional as F

    L = SEQ2SEQ_LEN
    return train_work(seq2seq(vocab, d_model, n_layer, n_head, d_ff),
                      lambda m: F.cross_entropy(m(ints(vocab, batch, L), ints(vocab, batch, L)).flatten(0, 1),
                                                ints(vocab, batch * L)), on_gpu, clip=True)


@cached
def seq2seq_decode(vocab, d_model, n_layer, n_head, d_ff, batch):
    """One greedy decoding step for ``batch`` sentences (the decoder on the whole prefix: an upper bound)."""
    L = SEQ2SEQ_LEN
    return forward_work(seq2seq(vocab, d_model, n_layer, n_head, d_ff),
                        lambda m: m(ints(vocab, batch, L), ints(vocab, batch, L // 2)))


NER_LEN = 22  # CoNLL-2003, notebook 12's output: 20.0 pieces per sentence (mean); length buckets pad ~10% more


def encoder_config():
    from transformers import AutoConfig
    from course_lib.ner import CONLL_TAGS, encoder_path

    return AutoConfig.from_pretrained(encoder_path(), num_labels=len(CONLL_TAGS))


@cached
def ner_step(batch, length, on_gpu, lora=False):
    import torch.nn.functional as F
    from transformers import AutoModelForTokenClassification

    def build():
        model = AutoModelForTokenClassification.from_config(encoder_config())
        if lora:
            for name, p in model.named_parameters():  # LoRA / adapters: the encoder frozen, a few weights trained
                p.requires_grad_(name.startswith("classifier"))
        return model

    return train_work(build, lambda m: F.cross_entropy(m(input_ids=ints(1000, batch, length)).logits.flatten(0, 1),
                                                       ints(9, batch * length)), on_gpu, clip=True)


@cached
def ner_predict(batch, length):
    from transformers import AutoModelForTokenClassification

    return forward_work(lambda: AutoModelForTokenClassification.from_config(encoder_config()),
                        lambda m: m(input_ids=ints(1000, batch, length)))


@cached
def cnn_step(batch, on_gpu):
    import torch.nn.functional as F
    from course_lib.metrics import small_cnn

    return train_work(small_cnn, lambda m: F.cross_entropy(m(rand(batch, 1, 28, 28)), ints(10, batch)), on_gpu)


@cached
def em_step(n, k, d=2):
    """One EM iteration of course_lib.mixtures (float64) plus the log-likelihood that fit_gmm tracks. Counted on
    small real CPU tensors (the mixture code makes CPU constants that meta tensors cannot mix with)."""
    import torch
    from course_lib.mixtures import GaussianMixture

    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, d, dtype=torch.float64, generator=g)
    gmm = GaussianMixture(torch.full((k,), 1.0 / k, dtype=torch.float64), x[:k].clone(),
                          torch.eye(d, dtype=torch.float64).expand(k, d, d).clone())
    return count(lambda: gmm.em_step(x).log_prob(x).mean())


def loops_00(c):
    n_fit = c.n_train - c.n_val
    sweep = [Loop(f"EM K={k}", c.em_iters, lambda g, k=k: em_step(n_fit, k), host=True) for k in c.k_sweep]
    small = [Loop(f"EM K={k}, {c.n_small} points", c.em_iters, lambda g, k=k: em_step(c.n_small, k), host=True)
             for k in c.k_sweep]
    inline = Loop("EM by hand and by course_lib", 2 * c.em_iters, lambda g: em_step(c.n_train, c.n_components),
                  host=True)
    return [inline, *sweep, *small]


def loops_01(c):
    return []  # Monte Carlo sums and 2-D toy fits on the CPU, a few seconds each: all inside setup_s


def loops_02(c):
    h, B = tuple(c.hidden), c.batch_size
    ae = lambda latent, hidden=h: (lambda g: ae_step(hidden, latent, B, g))  # noqa: E731
    return [Loop("AE, 2-D code", c.steps_2d + c.inline_steps, ae(2)),
            Loop("AE, 32-D code", c.steps_ae + c.pitfall_steps + c.raw_steps + c.small_steps, ae(32)),
            Loop("denoising AEs (two)", 2 * c.steps_dae, ae(32)),
            Loop("overcomplete AE", c.over_steps, ae(1024, ()))]


def loops_03(c):
    B = c.batch_size
    main = Loop("VAE", c.epochs * (c.n_train // B), lambda g: vae_step(c.hidden, c.latent_dim, c.n_layers, B, g),
                amp=False)
    n_small = len(c.sweep_betas) + 4  # the beta sweep, then no KL, mean recon, sigmoid + MSE, wrong sign
    small = Loop(f"small VAEs ({n_small})", n_small * c.sweep_steps,
                 lambda g: vae_step(c.sweep_hidden, c.sweep_latent, 1, B, g), amp=False)
    chunk = c.iwae_batch * c.iwae_chunk  # images x samples per forward pass
    iwae = Loop("IWAE bounds", sum(c.iwae_ks) * c.n_iwae / chunk,
                lambda g: vae_iwae(c.hidden, c.latent_dim, c.n_layers, chunk, g), amp=False)
    return [main, small, iwae]


def loops_04(c):
    ring = lambda latent: (lambda g: mlp_gan_step(latent, c.ring_batch, False))  # noqa: E731
    return [Loop("DCGAN", c.dcgan_steps, lambda g: dcgan_step(c.width, c.latent_dim, c.batch_size, g)),
            Loop("ring GANs (on the CPU)", 2 * c.sat_steps + c.combined_steps, ring(2), host=True),
            Loop("ring GANs, 16-D z (on the CPU)", 2 * c.ring_steps, ring(16), host=True)]


def loops_05(c):
    B = c.batch_size
    cgan = lambda g: dcgan_step(c.width, 64, B, g, num_classes=10)  # noqa: E731
    track = c.cgan_steps // c.track_every + 1
    return [Loop("conditional GAN, MNIST", c.cgan_steps + 2 * c.pitfall_steps, cgan),
            Loop("conditional GAN, Fashion-MNIST", c.fashion_steps, cgan),
            Loop("tracking samples", track * c.n_track / 500, lambda g: gan_sample(c.width, 64, 500, 10), amp=False),
            Loop("NS-GAN", c.cmp_steps, lambda g: dcgan_step(c.cmp_width, 64, B, g)),
            Loop("WGAN-GP (5 critic steps)", c.cmp_steps,
                 lambda g: dcgan_step(c.cmp_width, 64, B, g, n_critic=5, gp=True, d_norm="layer"))]


def loops_06(c):
    step = lambda lam: (lambda g: cyclegan_step(c.g_width, c.n_res_blocks, c.d_width, c.batch_size, g, lam))  # noqa
    return [Loop("CycleGAN", c.steps, step(None)), Loop("CycleGAN without the cycle loss", c.ablation_steps, step(0.0))]


def ref_width(name: str) -> int:
    """UNet base width of a shipped diffusion reference, from its manifest recipe (``zoo.references``)."""
    from course_lib.zoo import references

    return references()[name]["recipe"]["width"]


def passes(w: float, labels_dropped_at_0: bool = False) -> int:
    """Network passes per guided sampler step at scale w (``diffusion.guided_eps``): one at w = 1, two otherwise;
    also one at w = 0 where the caller samples without labels there (notebook 08's ``sample_digits``)."""
    return 1 if w == 1.0 or (w == 0.0 and labels_dropped_at_0) else 2


def ref_scale(name: str) -> float:
    """The guidance scale a shipped reference samples at (its manifest's stored sampler setting)."""
    from course_lib.zoo import references

    return references()[name]["recipe"].get("sampler", {}).get("guidance_scale", 1.0)


def ref_guided(name: str) -> bool:
    """Whether a reference's stored sampler runs guided (two network passes per step)."""
    return passes(ref_scale(name)) == 2


def loops_07(c):
    b = c.sample_batch
    return [Loop("DDPM UNet", c.train_steps, lambda g: unet_step(c.base_channels, c.batch_size, g)),
            Loop("DDPM sampling, full chain", c.T, lambda g: unet_sample(c.base_channels, c.n_show), amp=False),
            Loop("DDIM sampling for FCD (EMA and last weights)", 2 * c.fcd_steps * math.ceil(c.n_fcd / b),
                 lambda g: unet_sample(c.base_channels, b), amp=False),
            Loop("reference: DDIM for FCD", c.fcd_steps * math.ceil(c.n_fcd / b),
                 lambda g: unet_sample(ref_width("ddpm_mnist"), b), amp=False),
            Loop("reference: DDPM and 2 x DDIM rows", c.T + 2 * c.ref_ddim_steps,
                 lambda g: unet_sample(ref_width("ddpm_mnist"), c.ref_n), amp=False)]


def loops_08(c):
    b, K = c.sample_batch, 10
    batches = lambda n: math.ceil(n / b)  # noqa: E731
    live = lambda g: unet_sample(c.base_channels, b, K)  # noqa: E731
    # one pass per unit: a guided step counts twice (its batch holds 2B images); sample_digits drops the labels at w = 0
    ref_pass = lambda n: lambda g: unet_sample(ref_width("cfg_mnist"), min(b, n), K)  # noqa: E731
    w_ref = ref_scale("cfg_mnist")  # the spot checks sample both models at the reference's own scale
    p = lambda w: passes(w, labels_dropped_at_0=True)  # noqa: E731
    ref_passes = (sum(c.ref_steps) * p(w_ref) + sum(p(w) for w in c.ref_scales) * c.ref_sweep_steps
                  + 2 * c.ref_sweep_steps * p(2.0)) * batches(c.ref_n)  # spot checks, sweep, null-label pitfall
    audio_shape = (1, 32, 32)  # (channels, mel bands, frames) of course_lib.audio's default spectrogram
    return [
        Loop("conditional UNet", c.train_steps, lambda g: unet_step(c.base_channels, c.batch_size, g, K)),
        Loop("DDIM steps sweep, live model", sum(c.ddim_steps) * batches(c.n_fcd) + 2 * 20 * batches(c.n_fcd),
             live, amp=False),
        Loop("spot checks, live model", sum(c.ref_steps) * p(w_ref) * batches(c.ref_n),
             lambda g: unet_sample(c.base_channels, min(b, c.ref_n), K), amp=False),
        Loop("sampling, reference (network passes)", ref_passes, ref_pass(c.ref_n), amp=False),
        Loop("clipping pitfall, reference (w = 2)", 2 * c.clip_steps * p(2.0) * batches(c.clip_n),
             ref_pass(c.clip_n), amp=False),
        Loop("audio UNet", c.audio_steps,
             lambda g: unet_step(c.audio_channels, c.audio_batch, g, K, audio_shape, ema=False)),
        Loop("audio sampling", 4 * c.audio_sample_steps,
             lambda g: unet_sample(c.audio_channels, c.n_audio_fcd, K, True, audio_shape), amp=False),
        Loop("pitfall UNets (width 8)", 2 * c.pitfall_steps, lambda g: unet_step(8, 32, g, K, ema=False)),
        Loop("audio classifier", c.clf_steps, lambda g: cnn_step(64, g))]


def loops_08b(c):
    b = 500  # generate() samples in batches of this many captions
    n_sampled = c.n_sweep * len(c.sweep_scales) + 2 * c.n_prompt + c.n_fcd + c.n_sweep
    return [Loop("latent autoencoder", c.ae_steps, lambda g: latent_ae_step(c.batch_size, g)),
            Loop("text-conditioned UNet", c.dm_steps, lambda g: text_unet_step(c.base_channels, c.batch_size, g)),
            Loop("guided DDIM sampling", n_sampled / b * c.sample_steps, lambda g: text_unet_sample(c.base_channels, b),
                 amp=False)]


def loops_09(c):
    V = 11  # digits 0-9 and a separator
    return [Loop("reversal GPTs (2)", 2 * c.steps,
                 lambda g: gpt_step(V, c.n_layer, c.n_head, c.n_embd, 2 * c.seq_len + 1, c.batch_size, g))]


SHAKESPEARE_VOCAB = 65  # characters of Tiny Shakespeare


def loops_10(c):
    V, B, T = SHAKESPEARE_VOCAB, c.batch_size, c.block_size
    main = lambda v: (lambda g: gpt_step(v, c.n_layer, c.n_head, c.n_embd, T, B, g, c.dropout))  # noqa: E731
    evals = c.n_evals * max(2, c.eval_batches // 4) + 2 * c.eval_batches  # during training, then val and train
    tang_head = 4 if c.tang_n_embd % 4 == 0 else 2
    return [
        Loop("GPT (time budget)", c.max_steps, main(V), budget_s=c.train_seconds),
        Loop("GPT evaluation", evals, lambda g: gpt_eval(V, c.n_layer, c.n_head, c.n_embd, T, c.eval_batch_size),
             amp=False),
        Loop("baby GPT (the same time)", 10**9, lambda g: gpt_step(V, 4, 4, 128, 64, 12, g), budget_s=c.train_seconds),
        Loop("characters vs BPE (2 runs)", 2 * c.max_steps, main(c.bpe_vocab), budget_s=2 * c.bpe_seconds),
        Loop("Tang poems GPT", c.max_steps, lambda g: gpt_step(c.tang_vocab, c.tang_n_layer, tang_head, c.tang_n_embd,
                                                                c.tang_block_size, c.tang_batch_size, g),
             budget_s=c.tang_seconds)]


def loops_11(c):
    V = c.vocab_size
    step = lambda d, n, ff: (lambda g: seq2seq_step(V, d, n, c.n_head, ff, c.batch_size, g))  # noqa: E731
    decode_steps = lambda n_sent, beams: math.ceil(n_sent / 100) * 1.5 * SEQ2SEQ_LEN * beams  # noqa: E731
    return [
        Loop("Transformer", c.steps, step(c.d_model, c.n_layer, c.d_ff)),
        Loop("ablation (3 models)", 3 * c.abl_steps, step(c.abl_d_model, c.abl_n_layer, None)),
        Loop("causal-mask pitfall (2 models)", 2 * c.pitfall_steps, step(c.abl_d_model, c.abl_n_layer, None)),
        Loop("greedy and beam decoding", decode_steps(c.n_test, 1 + c.beam_size) + decode_steps(3 * c.abl_n_test, 1),
             lambda g: seq2seq_decode(V, c.d_model, c.n_layer, c.n_head, c.d_ff, 100), amp=False)]


def loops_12(c):
    steps = c.max_steps or c.epochs * math.ceil(c.n_train / c.batch_size)
    n_pred = c.n_valid + c.n_test + 2 * c.n_long
    return [Loop("fine-tuning the encoder", steps, lambda g: ner_step(c.batch_size, NER_LEN, g)),
            Loop("predicting tags", n_pred / 64, lambda g: ner_predict(64, NER_LEN), amp=False)]


def loops_13(c):
    n_methods, n_lrs = len(c.lr_grids), max(len(v) for v in c.lr_grids.values())
    L = min(c.max_length, NER_LEN)
    gpt_cfg = (SHAKESPEARE_VOCAB, c.gpt_layers, c.gpt_heads, c.gpt_embd, c.gpt_block, c.gpt_batch)
    return [
        Loop("learning-rate pilots", n_methods * n_lrs * c.sweep_steps, lambda g: ner_step(c.batch_size, L, g)),
        Loop("equal-time runs", 10**9, lambda g: ner_step(c.batch_size, L, g),
             budget_s=len(c.fractions) * n_methods * c.seconds_per_run),
        Loop("GPT pre-training and 3 fine-tunings", c.gpt_pretrain_steps + 3 * c.gpt_ft_steps,
             lambda g: gpt_step(*gpt_cfg, g, clip=True))]


def loops_14(c):
    from course_lib.zoo import RECIPES

    B = c.batch_size
    w_ref = ref_scale("cfg_mnist")  # the sweep: every step count at the stored scale, then the other scales
    others = [w for w in c.sweep_guidance if w != w_ref]
    n_settings = len(c.sweep_ddim_steps) + len(others)
    cfg_sweep_passes = sum(c.sweep_ddim_steps) * passes(w_ref) + sum(passes(w) for w in others) * c.ddim_steps
    batches = math.ceil(c.n_sweep / 500)
    return [
        Loop("DCGAN (zoo recipe)", c.live_steps["dcgan"],
             lambda g: dcgan_step(c.live_widths["dcgan"] or RECIPES["dcgan"].width, 64, B, g)),
        Loop("DDPM (zoo recipe)", c.live_steps["ddpm"],
             lambda g: unet_step(c.live_widths["ddpm"] or RECIPES["ddpm"].width, B, g)),
        Loop(f"cfg reference samplers ({n_settings} settings, network passes)", cfg_sweep_passes * batches,
             lambda g: unet_sample(ref_width("cfg_mnist"), 500, 10), amp=False),
        Loop("DDPM reference sampler (1 setting)", c.ddim_steps * batches,
             lambda g: unet_sample(ref_width("ddpm_mnist"), 500), amp=False),
        Loop("cfg reference samples for scoring", math.ceil(c.n_eval / 500) * c.ddim_steps,
             lambda g: unet_sample(ref_width("cfg_mnist"), 500, 10, guided=ref_guided("cfg_mnist")), amp=False),
        Loop("DDPM reference samples for scoring", math.ceil(c.n_eval / 500) * c.ddim_steps,
             lambda g: unet_sample(ref_width("ddpm_mnist"), 500), amp=False),
        Loop("classifier for CAS", c.cas_steps, lambda g: cnn_step(128, g))]


def loops_15(c):
    from course_lib.zoo import RECIPES

    width = ref_width(c.diffusion_init)  # the diffusion arm fine-tunes this reference at its width
    n_gen = len(c.gen_per_class)
    n_extra = 10 * c.extra_per_class
    pools = len(c.per_class) * 3 + 2 * len(set(c.gen_per_class) & set(c.per_class))  # real, augment, oracle + 2 arms
    classifiers = pools * len(c.seeds) + len(c.per_class) + 1 + 2  # the experiment, the scarce ones, by hand, leaky
    return [
        Loop("conditional GANs", n_gen * c.gan_steps, lambda g: dcgan_step(RECIPES["cgan"].width, 64, 64, g, 10)),
        Loop("diffusion fine-tuning", n_gen * c.diffusion_steps,
             lambda g: unet_step(width, 64, g, 10)),
        Loop("sampling the diffusion pools", n_gen * math.ceil(n_extra / 500) * c.ddim_steps,
             lambda g: unet_sample(width, 500, 10, guided=True), amp=False),
        Loop("classifiers", classifiers * c.classifier_steps, lambda g: cnn_step(128, g))]


def loops_16(c):
    runs = len(c.procs) + 1  # one torchrun per process count, and one single process with one rank's threads
    model = (SHAKESPEARE_VOCAB, c.n_layer, c.n_head, c.n_embd, c.block_size, c.batch_size)
    return [Loop("data-parallel runs", runs * c.steps, lambda g: gpt_step(*model, g)),
            Loop("fp32 vs autocast steps", 2 * (c.amp_reps + 1),
                 lambda g: gpt_step(SHAKESPEARE_VOCAB, c.n_layer, c.n_head, c.n_embd, c.block_size, c.demo_batch, g))]


LOOPS = {
    "00_orientation": loops_00,
    "01_generative_modelling_basics": loops_01,
    "02_autoencoders": loops_02,
    "03_vae": loops_03,
    "04_gan_dcgan": loops_04,
    "05_conditional_gan_wgan": loops_05,
    "06_cyclegan": loops_06,
    "07_ddpm": loops_07,
    "08_ddim_guidance": loops_08,
    "08b_latent_text_to_image": loops_08b,
    "09_attention_transformer": loops_09,
    "10_gpt": loops_10,
    "11_seq2seq_translation": loops_11,
    "12_ner_finetuning": loops_12,
    "13_peft_lora_adapters": loops_13,
    "14_evaluating_generative_models": loops_14,
    "15_capstone_synthetic_data": loops_15,
    "16_scaling_out": loops_16,
}
NOT_COUNTED = {  # the work each entry leaves to setup_s: small next to its loops, or not network work at all
    "00_orientation": "plots and the EM animation",
    "01_generative_modelling_basics": "everything: Monte Carlo sums and 2-D fits of a few seconds each",
    "02_autoencoders": "FCD and PSNR evaluation, interpolations",
    "03_vae": "FCD sampling and scoring, active units, the posterior plots",
    "04_gan_dcgan": "FCD scoring, snapshots, the BatchNorm pitfall (100 steps)",
    "05_conditional_gan_wgan": "FCD scoring inside the comparison's callbacks, the 2-D critic toys",
    "06_cyclegan": "translation scores, the discriminator demo",
    "07_ddpm": "the Gaussian oracle's chains (CPU), FCD features",
    "08_ddim_guidance": "inpainting, Griffin-Lim, the oracle checks",
    "08b_latent_text_to_image": "the frozen text encoder on the captions, FCD, the cost probe",
    "09_attention_transformer": "the attention demos",
    "10_gpt": "BPE training and tokenizing (CPU), text sampling, the KV-cache demo",
    "11_seq2seq_translation": "tokenizers and BLEU; decoding is counted as one full-prefix pass per token",
    "12_ner_finetuning": "tokenizing, entity scoring",
    "13_peft_lora_adapters": "the latency measurement, merging, test-set scoring, GPT sampling",
    "14_evaluating_generative_models": "KID, bootstraps, feature extraction, the non-diffusion references' samples",
    "15_capstone_synthetic_data": "GAN sampling, filtering, confidence intervals",
    "16_scaling_out": "nothing beyond torchrun's start-up, counted as SUBPROCESS_S per launch",
}
SUBPROCESS_S = {"16_scaling_out": 10.0}  # per torchrun launch: a new Python with torch imported, on any device


# ----------------------------------------------------------------------------- prediction


@dataclass
class LoopEstimate:
    name: str
    steps: float
    seconds: float
    gflops_per_step: float
    mb_per_step: float
    launches_per_step: int


@dataclass
class Estimate:
    notebook: str
    device: str
    profile: str
    minutes: float
    loops: list[LoopEstimate] = field(default_factory=list)


def predict(stem: str, device: Device, profile: str, host: Device) -> Estimate:
    """Minutes of ``stem`` at ``profile``'s sizes on ``device`` (loops marked host run on ``host``)."""
    cfg = notebook_sizes(stem, profile)
    on_gpu = device.name != "cpu"
    total, rows = device.setup_s, []
    for loop in LOOPS[stem](cfg):
        d = host if loop.host else device
        work = loop.work(on_gpu and not loop.host)
        seconds = loop.steps * work.seconds(d, amp=loop.amp and d is not host)
        if loop.budget_s is not None:
            seconds = min(seconds, loop.budget_s)
        total += seconds
        rows.append(LoopEstimate(loop.name, loop.steps, seconds, work.flops / 1e9,
                                 (work.mm_bytes + work.other_bytes) / 1e6, work.launches))
    if stem in SUBPROCESS_S:
        total += SUBPROCESS_S[stem] * (len(cfg.procs) + 1)
    return Estimate(stem, device.name, profile, total / 60, rows)


def measured_cpu_seconds(stem: str) -> float | None:
    path = ROOT / "results" / stem / "cpu.json"
    return json.loads(path.read_text())["wall_time_s"] if path.is_file() else None


def build(bench: dict, retimed: dict | None = None) -> dict:
    """Every estimate; ``retimed`` ({stem: {"wall_s": s}}) adds cpu-profile wall times re-measured on the machine
    the bench ran on, for notebooks whose records come from another machine."""
    cpu = cpu_device(bench)
    out = {"devices": {k: asdict(d) for k, d in {**DEVICES, "cpu": cpu}.items()}, "notebooks": {}}
    for stem in LOOPS:
        gpu_est = {name: predict(stem, d, "gpu", cpu) for name, d in DEVICES.items()}
        cpu_est = predict(stem, cpu, "cpu", cpu)
        measured = measured_cpu_seconds(stem)
        out["notebooks"][stem] = {
            "gpu_minutes": {name: round(e.minutes, 2) for name, e in gpu_est.items()},
            "gpu_loops_T4": [asdict(r) for r in gpu_est["T4"].loops],
            "cpu_check": {"predicted_s": round(60 * cpu_est.minutes, 1), "measured_s": measured,
                          "ratio": None if not measured else round(60 * cpu_est.minutes / measured, 3)},
            "cpu_loops": [asdict(r) for r in cpu_est.loops],
            "not_counted": NOT_COUNTED[stem],
        }
        if retimed and stem in retimed:
            again = retimed[stem]["wall_s"]
            ratio = round(60 * cpu_est.minutes / again, 3)
            out["notebooks"][stem]["cpu_check"].update(retimed_s=again, retimed_ratio=ratio)
    for key in ("ratio", "retimed_ratio"):
        ratios = [v["cpu_check"][key] for v in out["notebooks"].values() if v["cpu_check"].get(key)]
        out[f"cpu_check_{key}_within_1_5x"] = f"{sum(1 / 1.5 <= r <= 1.5 for r in ratios)} of {len(ratios)}"
    out["t4_budget_min"] = T4_BUDGET_MIN
    return out


def write_atomic(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    tmp.replace(path)


def print_tables(out: dict) -> None:
    print(f"{'notebook':34s}" + "".join(f"{d:>8s}" for d in DEVICES) + "   cpu: predicted / measured s (ratio)")
    for stem, v in out["notebooks"].items():
        c = v["cpu_check"]
        print(f"{stem:34s}" + "".join(f"{v['gpu_minutes'][d]:8.1f}" for d in DEVICES)
              + f"   {c['predicted_s']:7.0f} / {c['measured_s'] or float('nan'):5.0f} ({c['ratio']})")
    print("within 1.5x of the records:", out["cpu_check_ratio_within_1_5x"],
          "| of the re-timed runs:", out["cpu_check_retimed_ratio_within_1_5x"])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--print", action="store_true", help="print the tables")
    parser.add_argument("--only", nargs="*", help="notebooks to estimate (default: all); does not write the file")
    parser.add_argument("--retimed", type=Path, default=RETIMED if RETIMED.is_file() else None,
                        help="JSON {notebook: {wall_s: seconds}} of cpu runs re-timed where the bench ran "
                             "(default: results/time_model_retimed.json, from scripts/retime_cpu.py)")
    args = parser.parse_args(argv)
    if not BENCH.is_file():
        raise SystemExit(f"{BENCH} is missing: run `python scripts/time_model_bench.py` first (about 20 s).")
    bench = json.loads(BENCH.read_text())
    if args.only is not None:
        for stem in args.only or LOOPS:
            for name, d in {"T4": DEVICES["T4"], "cpu": cpu_device(bench)}.items():
                try:
                    e = predict(stem, d, "cpu" if name == "cpu" else "gpu", cpu_device(bench))
                except Exception as err:  # report and go on: --only is for looking at loops
                    print(f"{stem} {name}: {type(err).__name__}: {str(err)[:300]}")
                    continue
                print(f"{stem} {name}: {e.minutes:.1f} min")
                for r in e.loops:
                    print(f"   {r.name:45s} {r.steps:9.0f} x {r.gflops_per_step:9.3f} GFLOP {r.mb_per_step:9.1f} MB "
                          f"{r.launches_per_step:6d} ops -> {r.seconds:7.1f} s")
        return 0
    out = build(bench, json.loads(args.retimed.read_text()) if args.retimed else None)
    write_atomic(OUT, out)
    if args.print:
        print_tables(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
