"""Quick, profile-sized recipes for every image generator of the course (notebooks 14-15).

One call trains a model family on images x (N, 1, 28, 28) in [0, 1] and one call samples from it.
The recipes reuse the course's own networks, losses and settings; nothing is re-implemented here:

    name      network (course_lib)                         recipe (from the notebook that teaches it)
    vae       vae.VAE, MLP 784-512-32                      03: -ELBO on dynamically binarized pixels, Adam 1e-3,
                                                               cosine lr decay; samples are the decoder's pixel means
    dcgan     gan.Generator / Discriminator, width 32     04: non-saturating loss, Adam 2e-4, betas (0.5, 0.999)
    cgan      the same with num_classes=10             05: + projection discriminator, label embeddings N(0, 0.02)
    wgan_gp   the same, critic with LayerNorm          05: Wasserstein loss + gradient penalty 10, 5 critic steps
                                                               per generator step, Adam 1e-4, betas (0.5, 0.9)
    ddpm      unet.UNet, base 16 channels, T = 1000    07: the simple eps loss, AdamW 1.5e-3, warm-up + cosine lr,
                                                               gradient clipping 1; sampled with DDIM (eta = 0)
    cfg       the same with num_classes=10             08: + label dropout p_uncond = 0.2; sampled with
                                                               classifier-free guidance (scale w = 2 by default)

A "step" is one optimizer step of the model that is sampled (for the GANs: one generator step, after
1 or 5 discriminator steps). Every recipe draws mini-batches from seeded epoch permutations of x; with
fewer than ``batch_size`` images the batch holds each image about once (at least 2 images, for BatchNorm).
Training is deterministic given ``seed`` on one device and leaves the global random state untouched.

Usage::

    from course_lib import zoo
    trained = zoo.train("cfg", train.x[:5000], train.y[:5000], steps=500)     # -> zoo.Trained
    images = zoo.sample(trained, 1000, labels=torch.arange(1000) % 10)       # (1000, 1, 28, 28) in [0, 1]
    zoo.save(trained, "cfg.pt"); again = zoo.load("cfg.pt")
    flops = zoo.train_flops_per_step("ddpm", batch_size=64)                  # forward + backward FLOPs of one step
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

from .device import get_device
from .diffusion import NoiseSchedule, ddim_sample, diffusion_loss
from .fcd import _check_images
from .gan import GANConfig, Discriminator, Generator, from_unit, generate_images, to_unit, train_gan
from .train import History, cosine_lr, fit, load_checkpoint, save_checkpoint
from .unet import UNet, UNetConfig
from .vae import VAE, VAEConfig, binarize, elbo

MODELS = ("vae", "dcgan", "cgan", "wgan_gp", "ddpm", "cfg")
CONDITIONAL = ("cgan", "cfg")
NUM_CLASSES = 10


@dataclass(frozen=True)
class Recipe:
    """The defaults of one model family; ``train(..., lr=, width=)`` override the first two."""

    lr: float  # learning rate (of both players for the GANs)
    width: int  # VAE hidden units, GAN width (D's first conv / G's last), or UNet base channels
    betas: tuple[float, float] = (0.9, 0.999)  # Adam(W) betas
    loss: str = "non_saturating"  # GANs: the game (gan.LOSS_KINDS)
    n_critic: int = 1  # GANs: discriminator steps per generator step
    gp_weight: float = 0.0  # GANs: weight of the gradient penalty
    latent_dim: int = 64  # VAE: size of z (32); GANs: size of z (64)
    T: int = 1000  # diffusion: number of noise levels (linear schedule)
    p_uncond: float = 0.0  # diffusion: label dropout for classifier-free guidance
    warmup: int = 100  # diffusion: linear warm-up steps (at most a tenth of the run)


RECIPES = {
    "vae": Recipe(lr=1e-3, width=512, latent_dim=32),
    "dcgan": Recipe(lr=2e-4, width=32, betas=(0.5, 0.999)),
    "cgan": Recipe(lr=2e-4, width=32, betas=(0.5, 0.999)),
    "wgan_gp": Recipe(lr=1e-4, width=32, betas=(0.5, 0.9), loss="wasserstein", n_critic=5, gp_weight=10.0),
    "ddpm": Recipe(lr=1.5e-3, width=16),
    "cfg": Recipe(lr=1.5e-3, width=16, p_uncond=0.2),
}


@dataclass
class Trained:
    name: str  # one of MODELS
    model: nn.Module  # the VAE, the generator, or the UNet (eval mode)
    steps: int  # optimizer steps of that model
    train_seconds: float  # measured wall time of training
    extra: dict = field(default_factory=dict)  # settings used; "schedule" (NoiseSchedule) for diffusion
    history: History | None = None  # logged losses (course_lib.train.History)

    @property
    def conditional(self) -> bool:
        return self.name in CONDITIONAL


# ----------------------------------------------------------------------------- checks and batches


def _check_name(name: str) -> str:
    if name not in MODELS:
        raise ValueError(f"Unknown model {name!r}; choose one of {', '.join(MODELS)}.")
    return name


def _check_labels(name: str, labels, n: int, who: str) -> torch.Tensor | None:
    """Labels (n,) int64 in [0, 10) on the CPU for a conditional model, None otherwise."""
    if name not in CONDITIONAL:
        return None
    if labels is None:
        raise ValueError(f"{who}: {name!r} is class-conditional: pass labels, an int64 tensor of shape ({n},) "
                         f"with values in [0, {NUM_CLASSES}).")
    labels = torch.as_tensor(labels).cpu()
    if labels.shape != (n,) or labels.is_floating_point() or labels.min() < 0 or labels.max() >= NUM_CLASSES:
        raise ValueError(f"{who}: labels must be integers in [0, {NUM_CLASSES}) of shape ({n},), "
                         f"got {labels.dtype} of shape {tuple(labels.shape)}.")
    return labels.long()


def _batches(x: torch.Tensor, y: torch.Tensor | None, batch_size: int, generator: torch.Generator):
    """Endless mini-batches x (B, 1, 28, 28) [and y (B,)] from a stream of seeded epoch permutations."""
    n = x.shape[0]
    order = torch.empty(0, dtype=torch.long)
    while True:
        while len(order) < batch_size:  # several epochs per batch when n < batch_size
            order = torch.cat([order, torch.randperm(n, generator=generator)])
        idx, order = order[:batch_size].to(x.device), order[batch_size:]
        yield x[idx] if y is None else (x[idx], y[idx])


# ----------------------------------------------------------------------------- networks


def _build(name: str, recipe: Recipe) -> nn.Module:
    if name == "vae":
        return VAE(VAEConfig(hidden=recipe.width, latent_dim=recipe.latent_dim))
    if name in ("dcgan", "cgan", "wgan_gp"):
        return Generator(_gan_config(name, recipe))
    if recipe.width % 8:
        raise ValueError(f"{name}: the UNet's width (base channels) must be a multiple of 8, got {recipe.width}.")
    return UNet(UNetConfig(base_channels=recipe.width, num_classes=NUM_CLASSES if name == "cfg" else None))


def _gan_config(name: str, recipe: Recipe) -> GANConfig:
    return GANConfig(latent_dim=recipe.latent_dim, width=recipe.width, num_classes=NUM_CLASSES if name == "cgan" else 0,
                     d_norm="layer" if name == "wgan_gp" else "batch")


def _config_from_dict(name: str, config: dict):
    if name == "vae":
        return VAEConfig(**config)
    if name in ("dcgan", "cgan", "wgan_gp"):
        return GANConfig(**config)
    return UNetConfig(**{**config, "channel_mults": tuple(config["channel_mults"])})


# ----------------------------------------------------------------------------- training


def train(name: str, x: torch.Tensor, y: torch.Tensor | None = None, *, steps: int, batch_size: int = 64,
          lr: float | None = None, width: int | None = None, device: torch.device | str | None = None, seed: int = 0,
          progress: bool = True) -> Trained:
    """Train model ``name`` for ``steps`` steps on images x (N, 1, 28, 28) in [0, 1].

    y (N,) int64 labels are required for "cgan" and "cfg" and ignored by the other models.
    ``lr`` and ``width`` override the recipe's defaults (see ``RECIPES``).
    """
    recipe = RECIPES[_check_name(name)]
    recipe = Recipe(**{**asdict(recipe), **({"lr": lr} if lr is not None else {}),
                       **({"width": width} if width is not None else {})})
    x = _check_images(x, "x")
    y = _check_labels(name, y, x.shape[0], f"train({name!r})")
    if steps < 1 or batch_size < 1:
        raise ValueError(f"train: steps and batch_size must be >= 1, got steps={steps}, batch_size={batch_size}.")
    device = torch.device(device) if device is not None else get_device()
    batch_size = max(2, min(batch_size, x.shape[0]))  # capped at N; at least 2 images for BatchNorm
    order_rng = torch.Generator().manual_seed(seed)  # batch order
    forked = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=forked):
        torch.manual_seed(seed)  # weights, latent noise, diffusion steps and noise, binarization
        model = _build(name, recipe).to(device)
        history = History()
        x = x.float().to(device)
        y = y.to(device) if y is not None else None
        start = time.perf_counter()
        if name == "vae":
            _train_vae(model, recipe, x, batch_size, order_rng, steps, device, history, progress)
        elif name in ("dcgan", "cgan", "wgan_gp"):
            _train_gan(name, model, recipe, x, y, batch_size, order_rng, steps, device, history, progress)
        else:
            _train_diffusion(name, model, recipe, x, y, batch_size, order_rng, steps, device, history, progress)
        seconds = time.perf_counter() - start
    extra = dict(lr=recipe.lr, width=recipe.width, batch_size=batch_size, seed=seed, n_train=x.shape[0])
    if name in ("ddpm", "cfg"):
        extra.update(schedule=NoiseSchedule.linear(recipe.T), T=recipe.T, p_uncond=recipe.p_uncond)
    return Trained(name, model.eval(), steps, seconds, extra, history)


def _train_vae(model, recipe, x, batch_size, order_rng, steps, device, history, progress):
    def loss_fn(model, batch):  # batch: gray images (B, 1, 28, 28); a fresh binarization every time
        terms = elbo(model, binarize(batch.flatten(1)))  # (B,) each, nats
        return -terms.elbo.mean(), {"distortion": -terms.recon.mean().detach(), "rate": terms.kl.mean().detach()}

    optimizer = torch.optim.Adam(model.parameters(), lr=recipe.lr, betas=recipe.betas)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: cosine_lr(s, steps, min_ratio=0.05))
    fit(model, optimizer, loss_fn, _batches(x, None, batch_size, order_rng), steps=steps, device=device,
        scheduler=scheduler, amp=False, history=history, log_every=max(1, steps // 200), progress=progress, desc="vae")


def _train_gan(name, generator, recipe, x, y, batch_size, order_rng, steps, device, history, progress):
    discriminator = Discriminator(_gan_config(name, recipe)).to(device)
    if name == "cgan":  # DCGAN scale for the class embeddings, as in notebook 05 (PyTorch's default is N(0, 1))
        for net in (generator, discriminator):
            nn.init.normal_(net.embed.weight, 0.0, 0.02)
    opt_g = torch.optim.Adam(generator.parameters(), recipe.lr, betas=recipe.betas)
    opt_d = torch.optim.Adam(discriminator.parameters(), recipe.lr, betas=recipe.betas)
    train_gan(generator, discriminator, opt_g, opt_d, _batches(from_unit(x), y, batch_size, order_rng),  # [-1, 1]
              steps=steps, loss=recipe.loss, n_critic=recipe.n_critic, gp_weight=recipe.gp_weight, device=device,
              history=history, log_every=max(1, steps // 200), progress=progress, desc=name)


def _train_diffusion(name, model, recipe, x, y, batch_size, order_rng, steps, device, history, progress):
    schedule = NoiseSchedule.linear(recipe.T)

    def loss_fn(model, batch):
        x0, labels = batch if isinstance(batch, (tuple, list)) else (batch, None)
        return diffusion_loss(model, schedule, x0, labels, p_uncond=recipe.p_uncond)

    warmup = min(recipe.warmup, steps // 10)
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.lr, betas=recipe.betas, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: cosine_lr(s, steps, warmup))
    fit(model, optimizer, loss_fn, _batches(from_unit(x), y, batch_size, order_rng), steps=steps, device=device,
        scheduler=scheduler, grad_clip=1.0, history=history, log_every=max(1, steps // 200), progress=progress,
        desc=name)


# ----------------------------------------------------------------------------- sampling


@torch.no_grad()
def sample(trained: Trained, n: int, labels: torch.Tensor | None = None, *, seed: int = 0, ddim_steps: int = 20,
           guidance_scale: float = 2.0, batch_size: int = 500) -> torch.Tensor:
    """``n`` samples (n, 1, 28, 28) in [0, 1] on the CPU; ``labels`` (n,) required for conditional models
    (and ignored by the others, so one loop can sample every model).

    The same seed gives the same samples. Diffusion models use DDIM with ``ddim_steps`` steps (eta = 0,
    x0 clipped to [-1, 1]); "cfg" uses the guidance scale w (1: plain conditional, 0: unconditional).
    """
    name = _check_name(trained.name)
    if n < 1:
        raise ValueError(f"sample: n must be >= 1, got {n}.")
    labels = _check_labels(name, labels, n, f"sample({name!r})")
    model = trained.model.eval()
    device = next(model.parameters()).device
    g = torch.Generator().manual_seed(seed)  # CPU noise: the same samples on every device
    out = []
    for start in range(0, n, batch_size):
        b = min(batch_size, n - start)
        lab = None if labels is None else labels[start : start + b].to(device)  # (b,)
        if name == "vae":
            z = torch.randn(b, model.config.latent_dim, generator=g).to(device)  # (b, latent_dim)
            images = torch.sigmoid(model.decode(z)).view(b, 1, 28, 28)  # the decoder's pixel means
        elif name in ("dcgan", "cgan", "wgan_gp"):
            images = generate_images(model, b, labels=lab, batch_size=b, rng=g)
        else:
            x = ddim_sample(model, trained.extra["schedule"], (b, 1, 28, 28), steps=ddim_steps, eta=0.0, labels=lab,
                            guidance_scale=guidance_scale if lab is not None else 1.0, clip_x0=True, generator=g,
                            progress=False)
            images = to_unit(x)
        out.append(images.float().cpu().clamp(0, 1))
    return torch.cat(out)  # (n, 1, 28, 28)


# ----------------------------------------------------------------------------- cost, save, load


class _FlopCounter(TorchDispatchMode):
    """Sums torch's FLOP formulas (``torch.utils.flop_counter.flop_registry``) over every op that runs.

    (``FlopCounterMode`` does the same but also tracks modules with backward hooks, which fail inside the
    ``torch.autograd.grad`` call of the gradient penalty.)
    """

    def __init__(self):
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = flop_registry.get(func._overloadpacket)
        if formula is not None:
            self.total += formula(*args, **kwargs, out_val=out)
        return out


def train_flops_per_step(trained_or_name: Trained | str, batch_size: int = 64, width: int | None = None) -> float:
    """FLOPs of one training step (forward and backward passes, all discriminator steps included).

    Counted with torch's FLOP formulas around ``train(..., steps=1)`` on random images, so it counts
    exactly what ``train`` runs: matrix products and convolutions (2 FLOPs per multiply-add); element-wise
    work and the optimizer's updates are not counted. ``width`` defaults to the trained model's or the recipe's.
    """
    if isinstance(trained_or_name, Trained):
        name, width = trained_or_name.name, width if width is not None else trained_or_name.extra.get("width")
    else:
        name = _check_name(trained_or_name)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(batch_size, 1, 28, 28, generator=g)  # (B, 1, 28, 28)
    y = torch.randint(0, NUM_CLASSES, (batch_size,), generator=g)  # (B,)
    with _FlopCounter() as counter:
        train(name, x, y, steps=1, batch_size=batch_size, width=width, device="cpu", progress=False)
    return float(counter.total)


def save(trained: Trained, path: str | Path) -> Path:
    """Write the model's weights and everything ``load`` needs to rebuild it (atomic, weights_only-safe)."""
    extra = {k: v for k, v in trained.extra.items() if k != "schedule"}  # the schedule is rebuilt from T
    return save_checkpoint(path, name=trained.name, steps=trained.steps, train_seconds=trained.train_seconds,
                           config=asdict(trained.model.config), model=trained.model.state_dict(), extra=extra,
                           history=trained.history.state_dict() if trained.history is not None else None)


def load(path: str | Path, device: torch.device | str | None = None) -> Trained:
    """Rebuild a ``Trained`` written by ``save``, on ``device`` (default: course_lib.get_device())."""
    device = torch.device(device) if device is not None else get_device()
    state = load_checkpoint(path)
    name = _check_name(state["name"])
    config = _config_from_dict(name, state["config"])
    model = VAE(config) if name == "vae" else Generator(config) if name in ("dcgan", "cgan", "wgan_gp") else UNet(config)
    model.load_state_dict(state["model"])
    extra = dict(state["extra"])
    if name in ("ddpm", "cfg"):
        extra["schedule"] = NoiseSchedule.linear(extra["T"])
    history = None
    if state.get("history") is not None:
        history = History()
        history.load_state_dict(state["history"])
    return Trained(name, model.to(device).eval(), int(state["steps"]), float(state["train_seconds"]), extra, history)


__all__ = ["MODELS", "CONDITIONAL", "NUM_CLASSES", "Recipe", "RECIPES", "Trained", "train", "sample",
           "train_flops_per_step", "save", "load"]
