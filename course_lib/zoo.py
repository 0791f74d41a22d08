"""Quick, profile-sized recipes for every image generator of the course (notebooks 04-05, 07-08, 14-15).

One call trains a model on images x (N, 1, 28, 28) in [0, 1]; every trained model then samples with
``sample(n, labels=None, generator=None)``: (n, 1, 28, 28) floats in [0, 1] on the CPU. Networks, losses
and settings are the course's own, each from the notebook that teaches it: vae (03), dcgan (04), cgan and
wgan_gp (05), ddpm (07) and cfg (08). ``RECIPES`` holds their settings; ``FAMILIES`` says how each family
(VAE, GAN, diffusion) is built, trained and sampled.

A "step" is one optimizer step of the sampled model (for the GANs: one generator step, after 1 or 5
discriminator steps). Training is deterministic given ``seed`` on one device and leaves the global random
state untouched. Reference models, trained much longer with the same code (``scripts/train_reference.py``),
ship in ``course_lib/weights/`` (recipes and metrics in ``references.json``) and load offline by name,
checked by sha256.

Usage::

    from course_lib import zoo
    trained = zoo.train("cfg", train.x[:5000], train.y[:5000], steps=500)     # -> zoo.Trained
    images = trained.sample(1000, labels=torch.arange(1000) % 10)            # (1000, 1, 28, 28) in [0, 1]
    zoo.save(trained, "cfg.pt"); again = zoo.load("cfg.pt")
    reference = zoo.load("cfg_mnist")                                        # a shipped reference model
    run = zoo.Run("ddpm", x, steps=10_000); run.advance(500); run.state_dict()  # train in segments, resume
    tuned = zoo.train("cfg", x_few, y_few, steps=250, init_from="cfg_mnist")  # fine-tune a reference
    flops = zoo.train_flops_per_step("ddpm", batch_size=64)                  # FLOPs of one training step
"""
from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from .checks import IMAGE_SHAPE, NUM_CLASSES, check_choice, check_images, check_labels
from .device import get_device
from .diffusion import NoiseSchedule, ddim_sample, diffusion_loss
from .files import sha256_of
from .gan import GANConfig, Discriminator, Generator, from_unit, generate_images, to_unit, train_gan
from .train import EMA, History, count_flops, cosine_lr, fit, load_checkpoint, save_checkpoint
from .unet import UNet, UNetConfig
from .vae import VAE, VAEConfig, binarize, elbo

MODELS = ("vae", "dcgan", "cgan", "wgan_gp", "ddpm", "cfg")
CONDITIONAL = ("cgan", "cfg")


@dataclass(frozen=True)
class Recipe:
    """The defaults of one model family; ``train(..., lr=, width=, ema_decay=)`` override those three."""

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
    ema_decay: float = 0.0  # > 0: sample from an exponential moving average of the weights (train.EMA)


RECIPES = {
    "vae": Recipe(lr=1e-3, width=512, latent_dim=32),
    "dcgan": Recipe(lr=2e-4, width=32, betas=(0.5, 0.999)),
    "cgan": Recipe(lr=2e-4, width=32, betas=(0.5, 0.999)),
    "wgan_gp": Recipe(lr=1e-4, width=32, betas=(0.5, 0.9), loss="wasserstein", n_critic=5, gp_weight=10.0),
    "ddpm": Recipe(lr=1.5e-3, width=16, ema_decay=0.999),
    "cfg": Recipe(lr=1.5e-3, width=16, p_uncond=0.2, ema_decay=0.999),
}


@dataclass
class Trained:
    """A trained generator behind one interface: ``sample(n, labels=None, generator=None)``.

    A diffusion model carries its noise schedule and sampler settings (``ddim_steps``, ``eta``,
    ``guidance_scale``) in ``extra``, so it is sampled like the others.
    """

    name: str  # one of MODELS
    model: nn.Module  # the VAE, the generator or the UNet (eval mode; EMA weights if the recipe keeps them)
    steps: int  # optimizer steps of that model
    train_seconds: float  # measured wall time of training
    extra: dict = field(default_factory=dict)  # settings used; "schedule" (NoiseSchedule) for diffusion
    history: History | None = None  # logged losses (course_lib.train.History)

    @property
    def conditional(self) -> bool:
        return self.name in CONDITIONAL

    @torch.no_grad()
    def sample(self, n: int, labels: torch.Tensor | None = None, generator: torch.Generator | None = None,
               batch_size: int = 500, **settings) -> torch.Tensor:
        """``n`` images (n, 1, 28, 28) in [0, 1] on the CPU (a diffusion model trained on other sizes: its
        ``extra["image_shape"]``); ``labels`` (n,) for conditional models, ignored by the others, so one
        loop can sample every model. Noise comes from ``generator``, a CPU generator (default: seed 0):
        the same samples on every device. ``settings`` override the diffusion sampler's for this call."""
        if n < 1:
            raise ValueError(f"sample: n must be >= 1, got {n}.")
        labels = _check_labels(self.name, labels, n, f"sample({self.name!r})")
        unknown = set(settings) - set(SAMPLER_SETTINGS)
        if unknown:
            raise ValueError(f"sample: unknown settings {sorted(unknown)}; diffusion models take {SAMPLER_SETTINGS}.")
        g = generator if generator is not None else torch.Generator().manual_seed(0)
        device = next(self.model.parameters()).device
        draw = FAMILIES[_family(self.name)].draw
        out = []
        for start in range(0, n, batch_size):
            b = min(batch_size, n - start)
            lab = None if labels is None else labels[start : start + b].to(device)  # (b,)
            out.append(draw(self, b, lab, g, settings).float().cpu().clamp(0, 1))
        return torch.cat(out)  # (n, 1, 28, 28) or (n, *image_shape)


SAMPLER_SETTINGS = ("ddim_steps", "eta", "guidance_scale")


# ----------------------------------------------------------------------------- checks and batches


def _check_name(name: str) -> str:
    return check_choice(name, MODELS, "model")


def _family(name: str) -> str:
    return {"vae": "vae", "ddpm": "diffusion", "cfg": "diffusion"}.get(_check_name(name), "gan")


def _check_labels(name: str, labels, n: int, who: str) -> torch.Tensor | None:
    """Labels (n,) int64 in [0, 10) on the CPU for a conditional model, None otherwise."""
    if name not in CONDITIONAL:
        return None
    if labels is None:
        raise ValueError(f"{who}: {name!r} is class-conditional: pass labels, an int64 tensor of shape ({n},) "
                         f"with values in [0, {NUM_CLASSES}).")
    return check_labels(torch.as_tensor(labels).cpu(), n, f"{who}: labels", NUM_CLASSES)


class _Batches:
    """Endless mini-batches x (B, 1, 28, 28) [and y (B,)] from a stream of seeded epoch permutations.

    Its position (the rest of the current permutation and the generator's state) is part of a run's
    checkpoint, so a resumed run sees the same batches as an uninterrupted one."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor | None, batch_size: int, seed: int):
        self.x, self.y, self.batch_size = x, y, batch_size
        self.generator = torch.Generator().manual_seed(seed)
        self.order = torch.empty(0, dtype=torch.long)

    def __iter__(self):
        return self

    def __next__(self):
        while len(self.order) < self.batch_size:  # several epochs per batch when n < batch_size
            self.order = torch.cat([self.order, torch.randperm(self.x.shape[0], generator=self.generator)])
        idx, self.order = self.order[: self.batch_size].to(self.x.device), self.order[self.batch_size :]
        return self.x[idx] if self.y is None else (self.x[idx], self.y[idx])

    def state_dict(self) -> dict:
        return {"order": self.order.clone(), "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.order = state["order"].clone()
        self.generator.set_state(state["generator"])


# ----------------------------------------------------------------------------- one table of families


def _gan_config(name: str, recipe: Recipe) -> GANConfig:
    return GANConfig(latent_dim=recipe.latent_dim, width=recipe.width, num_classes=NUM_CLASSES if name == "cgan" else 0,
                     d_norm="layer" if name == "wgan_gp" else "batch")


def _unet(name: str, recipe: Recipe) -> UNet:
    if recipe.width % 8:
        raise ValueError(f"{name}: the UNet's width (base channels) must be a multiple of 8, got {recipe.width}.")
    return UNet(UNetConfig(base_channels=recipe.width, num_classes=NUM_CLASSES if name == "cfg" else None))


def _start_vae(run: Run) -> None:
    run.optimizers = [torch.optim.Adam(run.model.parameters(), lr=run.recipe.lr, betas=run.recipe.betas)]
    run.scheduler = torch.optim.lr_scheduler.LambdaLR(
        run.optimizers[0], lambda s: cosine_lr(s, run.total_steps, min_ratio=0.05))


def _advance_vae(run: Run, steps: int, progress: bool) -> None:
    def loss_fn(model, batch):  # batch: gray images (B, 1, 28, 28); a fresh binarization every time
        terms = elbo(model, binarize(batch.flatten(1)))  # (B,) each, nats
        return -terms.elbo.mean(), {"distortion": -terms.recon.mean().detach(), "rate": terms.kl.mean().detach()}

    fit(run.model, run.optimizers[0], loss_fn, run.batches, steps=run.step + steps, start_step=run.step,
        device=run.device, scheduler=run.scheduler, amp=False, history=run.history, log_every=run.log_every,
        progress=progress, desc=run.name, ema=run.ema)


def _draw_vae(trained: Trained, b: int, labels, g: torch.Generator, settings: dict) -> torch.Tensor:
    model = trained.model
    z = torch.randn(b, model.config.latent_dim, generator=g).to(next(model.parameters()).device)  # (b, latent_dim)
    return torch.sigmoid(model.decode(z)).view(b, *IMAGE_SHAPE)  # the decoder's pixel means


def _start_gan(run: Run) -> None:
    run.discriminator = Discriminator(_gan_config(run.name, run.recipe)).to(run.device)
    if run.name == "cgan":  # DCGAN scale for the class embeddings, as in notebook 05 (PyTorch's default is N(0, 1))
        for net in (run.model, run.discriminator):
            nn.init.normal_(net.embed.weight, 0.0, 0.02)
    run.optimizers = [torch.optim.Adam(net.parameters(), run.recipe.lr, betas=run.recipe.betas)
                      for net in (run.model, run.discriminator)]


def _advance_gan(run: Run, steps: int, progress: bool) -> None:
    opt_g, opt_d = run.optimizers
    train_gan(run.model, run.discriminator, opt_g, opt_d, run.batches, steps=run.step + steps, start_step=run.step,
              loss=run.recipe.loss, n_critic=run.recipe.n_critic, gp_weight=run.recipe.gp_weight, device=run.device,
              history=run.history, log_every=run.log_every, progress=progress, desc=run.name, ema=run.ema)


def _draw_gan(trained: Trained, b: int, labels, g: torch.Generator, settings: dict) -> torch.Tensor:
    return generate_images(trained.model, b, labels=labels, batch_size=b, rng=g)


def _start_diffusion(run: Run) -> None:
    warmup = min(run.recipe.warmup, run.total_steps // 10)
    run.optimizers = [torch.optim.AdamW(run.model.parameters(), lr=run.recipe.lr, betas=run.recipe.betas,
                                        weight_decay=0.0)]
    run.scheduler = torch.optim.lr_scheduler.LambdaLR(
        run.optimizers[0], lambda s: cosine_lr(s, run.total_steps, warmup))


def _advance_diffusion(run: Run, steps: int, progress: bool) -> None:
    schedule = NoiseSchedule.linear(run.recipe.T)

    def loss_fn(model, batch):
        x0, labels = batch if isinstance(batch, (tuple, list)) else (batch, None)
        return diffusion_loss(model, schedule, x0, labels, p_uncond=run.recipe.p_uncond)

    fit(run.model, run.optimizers[0], loss_fn, run.batches, steps=run.step + steps, start_step=run.step,
        device=run.device, scheduler=run.scheduler, grad_clip=1.0, history=run.history, log_every=run.log_every,
        progress=progress, desc=run.name, ema=run.ema)


def _draw_diffusion(trained: Trained, b: int, labels, g: torch.Generator, settings: dict) -> torch.Tensor:
    s = {k: trained.extra[k] for k in SAMPLER_SETTINGS} | settings
    shape = (b, *trained.extra.get("image_shape", IMAGE_SHAPE))  # (b, 1, 28, 28) for MNIST
    x = ddim_sample(trained.model, trained.extra["schedule"], shape, steps=s["ddim_steps"], eta=s["eta"],
                    labels=labels, guidance_scale=s["guidance_scale"] if labels is not None else 1.0, clip_x0=True,
                    generator=g, progress=False)
    return to_unit(x)


@dataclass(frozen=True)
class Family:
    """How one family of generators is built, trained (``start`` once, then ``advance`` by some steps)
    and sampled (``draw`` one batch); ``config`` rebuilds its network's config from a saved dict."""

    network: Callable[[str, Recipe], nn.Module]
    config: Callable[[dict], object]
    start: Callable[[Run], None]
    advance: Callable[[Run, int, bool], None]
    draw: Callable[[Trained, int, torch.Tensor | None, torch.Generator, dict], torch.Tensor]
    rebuild: Callable[[object], nn.Module]


FAMILIES = {
    "vae": Family(lambda name, r: VAE(VAEConfig(hidden=r.width, latent_dim=r.latent_dim)),
                  lambda c: VAEConfig(**c), _start_vae, _advance_vae, _draw_vae, VAE),
    "gan": Family(lambda name, r: Generator(_gan_config(name, r)), lambda c: GANConfig(**c), _start_gan,
                  _advance_gan, _draw_gan, Generator),
    "diffusion": Family(_unet, lambda c: UNetConfig(**{**c, "channel_mults": tuple(c["channel_mults"])}),
                        _start_diffusion, _advance_diffusion, _draw_diffusion, UNet),
}


# ----------------------------------------------------------------------------- training


class Run:
    """A training run that can be advanced a few steps at a time, checkpointed and resumed.

    ``steps`` is the length the learning-rate schedule is planned for; ``advance(k)`` trains k more.
    ``state_dict()`` holds everything needed to continue exactly (weights, optimizers, schedule, EMA, random
    state, batch order, history): a resumed run gives the same weights as an uninterrupted one. ``trained()``
    gives the sampler-ready model. The global random state is left untouched.
    """

    def __init__(self, name: str, x: torch.Tensor, y: torch.Tensor | None = None, *, steps: int, batch_size: int = 64,
                 lr: float | None = None, width: int | None = None, ema_decay: float | None = None,
                 device: torch.device | str | None = None, seed: int = 0, init_from: str | Trained | None = None):
        recipe = RECIPES[_check_name(name)]
        source = None
        if init_from is not None:  # fine-tuning: the network takes the source's width unless one is given
            with torch.random.fork_rng(devices=[]):  # building the network draws random initial weights
                source = load(init_from, device=device) if isinstance(init_from, str) else init_from
            width = source.extra.get("width") if width is None else width
        overrides = {k: v for k, v in dict(lr=lr, width=width, ema_decay=ema_decay).items() if v is not None}
        self.name, self.recipe = name, Recipe(**{**asdict(recipe), **overrides})
        self.family = FAMILIES[_family(name)]
        x = check_images(x, "x", self._image_shape(x), unit_range=True)
        y = _check_labels(name, y, x.shape[0], f"train({name!r})")
        if steps < 1 or batch_size < 1:
            raise ValueError(f"train: steps and batch_size must be >= 1, got steps={steps}, batch_size={batch_size}.")
        self.device = torch.device(device) if device is not None else get_device()
        self.total_steps, self.step, self.seconds = steps, 0, 0.0
        self.batch_size = max(2, min(batch_size, x.shape[0]))  # capped at N; at least 2 images for BatchNorm
        self.log_every = max(1, steps // LOG_POINTS)
        self.seed, self.n_train, self.image_shape = seed, x.shape[0], tuple(x.shape[1:])
        self.history = History()
        self.scheduler = None
        with torch.random.fork_rng(devices=self._cuda()):
            torch.manual_seed(seed)  # weights, latent noise, diffusion steps and noise, binarization
            self.model = self.family.network(name, self.recipe).to(self.device)
            self.family.start(self)
            self.rng = torch.random.get_rng_state()
            self.cuda_rng = torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None
        # fine-tuning: copy weights in place (the optimizer holds these tensors), before the EMA starts
        self.init_from = self._load_initial_weights(init_from, source) if source is not None else None
        self.ema = EMA(self.model, self.recipe.ema_decay) if self.recipe.ema_decay > 0 else None
        x = from_unit(x) if self.family is not FAMILIES["vae"] else x  # GANs and diffusion work in [-1, 1]
        self.batches = _Batches(x.float().to(self.device), y.to(self.device) if y is not None else None,
                                self.batch_size, seed)

    def _load_initial_weights(self, init_from: str | Trained, trained: Trained) -> str:
        """Copy in the weights of a reference name or a ``Trained`` with the same model name and network
        config (fine-tuning). Returns its label."""
        label = init_from if isinstance(init_from, str) else f"a trained {trained.name!r}"
        if trained.name != self.name or asdict(trained.model.config) != asdict(self.model.config):
            raise ValueError(f"init_from: {label} is a {trained.name!r} with {trained.model.config}; this run builds a "
                             f"{self.name!r} with {self.model.config}. Fine-tune from a model of the same name and "
                             "width, or train from scratch (init_from=None).")
        self.model.load_state_dict(trained.model.state_dict())
        return label

    def _image_shape(self, x: torch.Tensor) -> tuple:
        """(1, 28, 28), or for diffusion any (1, H, W) with H and W divisible by 4 (the UNet halves them
        twice): notebook 08's spectrograms are (1, 32, 32)."""
        shape = tuple(x.shape[1:]) if isinstance(x, torch.Tensor) and x.ndim == 4 else IMAGE_SHAPE
        ok = self.family is FAMILIES["diffusion"] and shape[0] == 1 and shape[1] % 4 == 0 and shape[2] % 4 == 0
        return shape if ok else IMAGE_SHAPE

    def _cuda(self) -> list:
        return [self.device] if self.device.type == "cuda" else []

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def advance(self, steps: int | None = None, progress: bool = True) -> Run:
        """Train ``steps`` more optimizer steps (default: to the end of the planned run)."""
        steps = self.total_steps - self.step if steps is None else min(steps, self.total_steps - self.step)
        if steps <= 0:
            return self
        with torch.random.fork_rng(devices=self._cuda()):
            torch.random.set_rng_state(self.rng)
            if self.cuda_rng is not None:
                torch.cuda.set_rng_state(self.cuda_rng, self.device)
            self._sync()
            start = time.perf_counter()
            self.family.advance(self, steps, progress)
            self._sync()  # the clock counts finished GPU work, not queued work
            self.seconds += time.perf_counter() - start
            self.rng = torch.random.get_rng_state()
            if self.cuda_rng is not None:
                self.cuda_rng = torch.cuda.get_rng_state(self.device)
        self.step += steps
        return self

    def trained(self) -> Trained:
        """The sampled network (a copy holding the EMA weights when the run keeps an EMA) as a ``Trained``."""
        model = self.ema.model_copy(self.model) if self.ema is not None else copy.deepcopy(self.model).eval()
        extra = dict(lr=self.recipe.lr, width=self.recipe.width, batch_size=self.batch_size, seed=self.seed,
                     n_train=self.n_train, ema_decay=self.recipe.ema_decay)
        if self.init_from is not None:
            extra["init_from"] = self.init_from  # fine-tuned from these weights
        if self.family is FAMILIES["diffusion"]:
            extra.update(schedule=NoiseSchedule.linear(self.recipe.T), T=self.recipe.T, p_uncond=self.recipe.p_uncond,
                         image_shape=list(self.image_shape), **DIFFUSION_SAMPLER)
        history = History()
        history.load_state_dict(self.history.state_dict())
        return Trained(self.name, model.eval(), self.step, self.seconds, extra, history)

    def state_dict(self) -> dict:
        nets = {"model": self.model.state_dict()}
        if hasattr(self, "discriminator"):
            nets["discriminator"] = self.discriminator.state_dict()
        return dict(nets, name=self.name, step=self.step, seconds=self.seconds, total_steps=self.total_steps,
                    optimizers=[o.state_dict() for o in self.optimizers],
                    scheduler=self.scheduler.state_dict() if self.scheduler is not None else None,
                    ema=self.ema.state_dict() if self.ema is not None else None, rng=self.rng, cuda_rng=self.cuda_rng,
                    batches=self.batches.state_dict(), history=self.history.state_dict())

    def load_state_dict(self, state: dict) -> None:
        if (state["name"], state["total_steps"]) != (self.name, self.total_steps):
            raise ValueError(f"This checkpoint is of a {state['name']!r} run planned for {state['total_steps']} steps, "
                             f"not {self.name!r} for {self.total_steps}: delete it or change the settings.")
        self.model.load_state_dict(state["model"])
        if "discriminator" in state:
            self.discriminator.load_state_dict(state["discriminator"])
        for opt, opt_state in zip(self.optimizers, state["optimizers"]):
            opt.load_state_dict(opt_state)
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
        self.step, self.seconds, self.rng = int(state["step"]), float(state["seconds"]), state["rng"]
        self.cuda_rng = state.get("cuda_rng") if self.device.type == "cuda" else None
        self.batches.load_state_dict(state["batches"])
        self.history.load_state_dict(state["history"])


LOG_POINTS = 200  # a run logs its losses at about this many steps
DIFFUSION_SAMPLER = dict(ddim_steps=20, eta=0.0, guidance_scale=2.0)  # default sampler settings of a trained UNet


def train(name: str, x: torch.Tensor, y: torch.Tensor | None = None, *, steps: int, batch_size: int = 64,
          lr: float | None = None, width: int | None = None, ema_decay: float | None = None,
          device: torch.device | str | None = None, seed: int = 0, progress: bool = True,
          init_from: str | Trained | None = None) -> Trained:
    """Train model ``name`` for ``steps`` steps on images x (N, 1, 28, 28) in [0, 1]: a whole ``Run``.

    y (N,) int64 labels are required for "cgan" and "cfg", ignored by the others. ``batch_size`` is capped
    at N (at least 2, for BatchNorm). ``lr``, ``width`` and ``ema_decay`` override the recipe (``RECIPES``).
    ``init_from`` (a reference name such as "cfg_mnist", or a ``Trained``) fine-tunes those weights; the
    optimizer, schedule and EMA start fresh.
    """
    run = Run(name, x, y, steps=steps, batch_size=batch_size, lr=lr, width=width, ema_decay=ema_decay, device=device,
              seed=seed, init_from=init_from)
    return run.advance(progress=progress).trained()


# ----------------------------------------------------------------------------- sampling


def sample(trained: Trained, n: int, labels: torch.Tensor | None = None, *, seed: int = 0,
           ddim_steps: int | None = None, guidance_scale: float | None = None, batch_size: int = 500) -> torch.Tensor:
    """``trained.sample(n, labels, generator=torch.Generator().manual_seed(seed))``: the same seed, the same
    samples. Diffusion models use DDIM (x0 clipped to [-1, 1]) with their own settings unless ``ddim_steps``
    or the guidance scale w (1: plain conditional, 0: unconditional) are given."""
    settings = {k: v for k, v in dict(ddim_steps=ddim_steps, guidance_scale=guidance_scale).items() if v is not None}
    return trained.sample(n, labels, torch.Generator().manual_seed(seed), batch_size=batch_size, **settings)


# ----------------------------------------------------------------------------- cost, save, load


def train_flops_per_step(trained_or_name: Trained | str, batch_size: int = 64, width: int | None = None) -> float:
    """FLOPs of one training step, forward and backward, all discriminator steps included (``count_flops``
    around ``train(..., steps=1)`` on random images); ``width`` defaults to the model's or the recipe's."""
    if isinstance(trained_or_name, Trained):
        name, width = trained_or_name.name, width if width is not None else trained_or_name.extra.get("width")
    else:
        name = _check_name(trained_or_name)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(batch_size, *IMAGE_SHAPE, generator=g)  # (B, 1, 28, 28)
    y = torch.randint(0, NUM_CLASSES, (batch_size,), generator=g)  # (B,)
    return float(count_flops(lambda: train(name, x, y, steps=1, batch_size=batch_size, width=width, device="cpu",
                                           progress=False)))


def save(trained: Trained, path: str | Path, half: bool = False) -> Path:
    """Write the model's weights and everything ``load`` needs to rebuild it (atomic, weights_only-safe).

    ``half=True`` stores floating-point weights as float16 (half the size; ``load`` converts back)."""
    extra = {k: v for k, v in trained.extra.items() if k != "schedule"}  # the schedule is rebuilt from T
    weights = {k: v.half() if half and v.is_floating_point() else v for k, v in trained.model.state_dict().items()}
    return save_checkpoint(path, name=trained.name, steps=trained.steps, train_seconds=trained.train_seconds,
                           config=asdict(trained.model.config), model=weights, extra=extra,
                           history=trained.history.state_dict() if trained.history is not None else None)


def load(name_or_path: str | Path, device: torch.device | str | None = None) -> Trained:
    """A reference model by name (``references()`` lists them; sha256-checked, offline), or a ``Trained``
    written by ``save`` from a path; on ``device`` (default: course_lib.get_device())."""
    bare_name = isinstance(name_or_path, str) and Path(name_or_path).suffix == "" and "/" not in name_or_path
    if str(name_or_path) in references() or (bare_name and not Path(name_or_path).exists()):
        path = reference_path(str(name_or_path))  # a reference name: checked, or a ReferenceError listing the names
    else:
        path = Path(name_or_path)
    device = torch.device(device) if device is not None else get_device()
    state = load_checkpoint(path)
    missing = [k for k in ("name", "config", "model", "extra", "steps", "train_seconds") if k not in state]
    if missing:
        raise ValueError(f"{path} is not a checkpoint written by zoo.save (it lacks {', '.join(missing)}). "
                         "Load it with course_lib.train.load_checkpoint, or train and save the model with zoo.")
    name = _check_name(state["name"])
    family = FAMILIES[_family(name)]
    model = family.rebuild(family.config(state["config"]))
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state["model"].items()})
    extra = dict(state["extra"])
    if family is FAMILIES["diffusion"]:
        extra = {**DIFFUSION_SAMPLER, **extra, "schedule": NoiseSchedule.linear(extra["T"])}
    history = None
    if state.get("history") is not None:
        history = History()
        history.load_state_dict(state["history"])
    return Trained(name, model.to(device).eval(), int(state["steps"]), float(state["train_seconds"]), extra, history)


# ----------------------------------------------------------------------------- reference models

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
REFERENCES_MANIFEST = WEIGHTS_DIR / "references.json"


class ReferenceError(RuntimeError):
    """A reference model's weights are missing, corrupt or unknown."""


def references() -> dict:
    """The manifest of reference models: name -> file, sha256, recipe, steps, wall time, machine, metrics."""
    if not REFERENCES_MANIFEST.is_file():
        return {}
    return json.loads(REFERENCES_MANIFEST.read_text())


def reference_path(name: str) -> Path:
    """The checked path of reference ``name``'s weights: the file exists and its sha256 is the manifest's."""
    manifest = references()
    if name not in manifest:
        raise ReferenceError(f"No reference model {name!r}; available: {', '.join(sorted(manifest)) or 'none'}.")
    entry = manifest[name]
    path = WEIGHTS_DIR / entry["file"]
    fix = (f"Fix: restore it with `git checkout -- course_lib/weights/{entry['file']}` (or reinstall course_lib), "
           f"or train it again with `python scripts/train_reference.py {name}`.")
    if not path.is_file():
        raise ReferenceError(f"The weights of reference model {name!r} are missing: {path}.\n{fix}")
    digest = sha256_of(path)
    if digest != entry["sha256"]:
        raise ReferenceError(f"The weights of reference model {name!r} at {path} are corrupt or changed "
                             f"(sha256 {digest[:12]}..., expected {entry['sha256'][:12]}...).\n{fix}")
    return path


__all__ = ["MODELS", "CONDITIONAL", "NUM_CLASSES", "Recipe", "RECIPES", "Trained", "Run", "Family", "FAMILIES",
           "train", "sample", "train_flops_per_step", "save", "load", "references", "reference_path",
           "ReferenceError"]
