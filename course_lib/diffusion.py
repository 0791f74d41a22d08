"""Denoising diffusion: noise schedules, the forward process, the training loss, DDPM and DDIM sampling.

The forward process, the posterior, the schedules and the simple loss of DDPM (Ho et al., 2020) are
derived in notebook 07; DDIM (Song et al., 2021) and classifier-free guidance (Ho & Salimans, 2021)
in notebook 08. The cosine schedule is Nichol & Dhariwal's (2021).

Timestep convention: steps are 0-based, ``t`` in [0, T). Index t stands for step t + 1 of Ho et al.
(steps 1..T): ``alpha_bars[0]`` is the first noise level, ``alpha_bars[T-1]`` the last (nearly pure
noise), and "x_0" always means the clean data. This is diffusers' convention.

Guidance scale w: eps = eps_uncond + w (eps_cond - eps_uncond); w = 1 is plain conditional sampling,
w = 0 unconditional. (Ho & Salimans write (1 + w') eps_cond - w' eps_uncond, i.e. w = 1 + w'.)

Samplers: ``ddpm_sample`` and ``ddim_sample`` share the keywords that are the fields of
``SamplerSettings``. They run under ``torch.no_grad`` with the model in eval mode (its mode is restored
afterwards), on the model's device, with a tqdm bar (``progress=False`` turns it off). ``clip_x0=True``
clamps x0_hat to [-1, 1], as Ho et al. and diffusers (``clip_sample``) do for data scaled to [-1, 1];
it matters most for the cosine schedule (see ``NoiseSchedule.cosine``).

Random numbers: with a ``generator`` the starting noise x_{T-1} is drawn on the generator's device, so a
CPU generator starts every device from the same x_{T-1} (DDIM with eta = 0, which draws nothing else, then
gives the same samples anywhere). The noise of the steps is drawn on the model's device, from the
generator if it lives there, else from a generator on that device seeded once from it. On a GPU a step
draws noise only when it uses it (not DDIM with eta = 0, not the last step); on a CPU every step draws,
so a seed keeps giving the samples it always gave, also when one generator is passed to batch after batch.

Usage::

    schedule = NoiseSchedule.linear(T=1000)        # or NoiseSchedule.cosine(1000), NoiseSchedule.make(name)
    loss = diffusion_loss(model, schedule, x0, labels, p_uncond=0.1)            # x0 in [-1, 1]
    x = ddpm_sample(model, schedule, (64, 1, 28, 28), labels=y, guidance_scale=2.0, clip_x0=True)
    x = ddim_sample(model, schedule, (64, 1, 28, 28), steps=50, eta=0.0, clip_x0=True)
    images = (x + 1) / 2                             # back to [0, 1]
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import NamedTuple

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .checks import check_timesteps
from .train import eval_mode

# A model is called as model(x_t, t, labels) -> eps_hat with x_t (B, ...), t (B,) int64, labels (B,) or None.
EpsModel = Callable[..., torch.Tensor]


class NoiseSchedule:
    """betas, alphas and alpha_bars (all (T,) float64 on the CPU) and the closed forms built on them."""

    def __init__(self, betas: torch.Tensor, name: str = "custom"):
        betas = torch.as_tensor(betas, dtype=torch.float64).flatten().cpu()  # (T,)
        if betas.numel() == 0 or not ((betas > 0) & (betas < 1)).all():
            raise ValueError("NoiseSchedule: betas must be a non-empty sequence with every value in (0, 1).")
        self.name = name
        self.betas = betas  # (T,)  beta_t
        self.alphas = 1.0 - betas  # (T,)  alpha_t = 1 - beta_t
        self.alpha_bars = torch.cumprod(self.alphas, dim=0)  # (T,)  alpha_bar_t = prod_{s<=t} alpha_s
        self.alpha_bars_prev = torch.cat([torch.ones(1, dtype=torch.float64), self.alpha_bars[:-1]])  # alpha_bar_{t-1}
        # posterior variance beta_tilde_t = beta_t (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t); 0 at t = 0
        self.posterior_variance = betas * (1 - self.alpha_bars_prev) / (1 - self.alpha_bars)  # (T,)

    @classmethod
    def linear(cls, T: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> NoiseSchedule:
        """Ho et al.'s betas, evenly spaced from 1e-4 to 0.02 for T = 1000, scaled by 1000 / T for other T
        (Nichol & Dhariwal's rule: alpha_bar_{T-1} stays near 0). Clipped at 0.999, which bites for T < 50."""
        scale = 1000 / T
        betas = torch.linspace(scale * beta_start, scale * beta_end, T, dtype=torch.float64)  # (T,)
        return cls(betas.clamp(max=0.999), "linear")

    @classmethod
    def cosine(cls, T: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> NoiseSchedule:
        """Nichol & Dhariwal: alpha_bar(u) = f(u) / f(0), f(u) = cos((u + s) / (1 + s) * pi / 2)^2, u = step / T.

        beta_t = min(1 - alpha_bar((t+1)/T) / alpha_bar(t/T), max_beta), so alpha_bars[t] = f((t+1)/T) / f(0)
        except at the last step, where the clip bites and leaves alpha_bar_{T-1} ~ 2e-9 (T = 1000).

        Caution: at t = T - 1, x0_hat multiplies any error in eps_hat by ~2e4, and the first DDIM step from
        T - 1 carries ~600 times that error into x_t'. Sample with ``clip_x0=True`` (data in [-1, 1]).
        """
        u = torch.arange(T + 1, dtype=torch.float64) / T  # (T+1,)  0, 1/T, ..., 1
        f = torch.cos((u + s) / (1 + s) * math.pi / 2) ** 2  # (T+1,)
        betas = (1 - f[1:] / f[:-1]).clamp(max=max_beta)  # (T,)  f(0) cancels in the ratio
        return cls(betas, "cosine")

    @classmethod
    def make(cls, name: str, T: int = 1000) -> NoiseSchedule:
        """``NoiseSchedule.make("linear" | "cosine", T)``."""
        if name not in ("linear", "cosine"):
            raise ValueError(f"Unknown noise schedule {name!r}; choose 'linear' or 'cosine'.")
        return getattr(cls, name)(T)

    @property
    def T(self) -> int:
        return self.betas.numel()

    def __repr__(self) -> str:
        return f"NoiseSchedule({self.name}, T={self.T})"

    # ---------------------------------------------------------------- per-step quantities

    def snr(self, t: torch.Tensor | int | None = None) -> torch.Tensor:
        """Signal-to-noise ratio alpha_bar_t / (1 - alpha_bar_t) at steps t (all T steps when t is None)."""
        ab = self.alpha_bars if t is None else self.alpha_bars[torch.as_tensor(t).cpu()]
        return ab / (1 - ab)

    def _at(self, values: torch.Tensor, t: torch.Tensor | int, x: torch.Tensor) -> torch.Tensor | float:
        """values[t] shaped to broadcast against x: (B, 1, 1, ...) on x's device and dtype for a tensor t,
        a plain float for an int t (the samplers' case: no indexing or copies per step)."""
        if isinstance(t, int):
            if not 0 <= t < self.T:
                raise ValueError(f"t must lie in [0, {self.T}) (0-based steps), got {t}.")
            return values[t].item()
        t = check_timesteps(torch.as_tensor(t).cpu().long(), x.shape[0], "NoiseSchedule")
        if (t < 0).any() or (t >= self.T).any():
            raise ValueError(f"t must lie in [0, {self.T}) (0-based steps), got values in [{t.min()}, {t.max()}].")
        out = values[t].to(device=x.device, dtype=x.dtype)  # (B,)
        return out.reshape(-1, *([1] * (x.ndim - 1)))  # (B, 1, 1, ...)

    # ---------------------------------------------------------------- closed forms

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor | int, noise: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) noise: a draw from q(x_t | x_0)."""
        ab = self._at(self.alpha_bars, t, x0)  # (B, 1, 1, 1)
        return ab**0.5 * x0 + (1 - ab) ** 0.5 * noise

    def predict_x0_from_eps(self, x_t: torch.Tensor, t: torch.Tensor | int, eps: torch.Tensor) -> torch.Tensor:
        """x0_hat = (x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t): q_sample solved for x_0."""
        ab = self._at(self.alpha_bars, t, x_t)
        return (x_t - (1 - ab) ** 0.5 * eps) / ab**0.5

    def predict_eps_from_x0(self, x_t: torch.Tensor, t: torch.Tensor | int, x0: torch.Tensor) -> torch.Tensor:
        """eps = (x_t - sqrt(alpha_bar_t) x_0) / sqrt(1 - alpha_bar_t): q_sample solved for the noise."""
        ab = self._at(self.alpha_bars, t, x_t)
        return (x_t - ab**0.5 * x0) / (1 - ab) ** 0.5

    def posterior_mean_variance(
        self, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor | int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean (B, ...) and variance (B, 1, 1, ...; a float for an int t) of q(x_{t-1} | x_t, x_0).
        At t = 0 the "previous" sample is the data itself: mean x_0, variance 0."""
        beta = self._at(self.betas, t, x_t)
        alpha = self._at(self.alphas, t, x_t)
        ab = self._at(self.alpha_bars, t, x_t)
        ab_prev = self._at(self.alpha_bars_prev, t, x_t)
        c0 = ab_prev**0.5 * beta / (1 - ab)  # coefficient of x_0
        ct = alpha**0.5 * (1 - ab_prev) / (1 - ab)  # coefficient of x_t
        return c0 * x0 + ct * x_t, self._at(self.posterior_variance, t, x_t)


# -------------------------------------------------------------------- training


def _randn(shape, generator: torch.Generator | None, device, dtype=torch.float32) -> torch.Tensor:
    """Standard normal noise drawn on the generator's device (so seeds give the same numbers anywhere), then moved."""
    gen_device = generator.device if generator is not None else device
    return torch.randn(shape, generator=generator, device=gen_device, dtype=dtype).to(device)


def _draws_every_step(device: torch.device) -> bool:
    """Whether every sampler step draws noise, used or not: on a CPU (see the module docstring)."""
    return device.type == "cpu"


def _generator_on(device: torch.device, generator: torch.Generator | None) -> torch.Generator | None:
    """``generator`` if it draws on ``device`` (or is None: the global one), else a generator on ``device``
    seeded once from it, so that a sampling loop draws its noise where it uses it."""
    if generator is None or generator.device == device:
        return generator
    seed = int(torch.randint(2**62, (), generator=generator, device=generator.device))
    return torch.Generator(device).manual_seed(seed)


def _null_label(model, null_label: int | None) -> int:
    if null_label is None:
        null_label = getattr(model, "null_label", None)
    if null_label is None:
        raise ValueError(
            "Classifier-free guidance needs a null label: use a class-conditional UNet (num_classes set) "
            "or pass null_label=..."
        )
    return null_label


def diffusion_loss(
    model: EpsModel,
    schedule: NoiseSchedule,
    x0: torch.Tensor,
    labels: torch.Tensor | None = None,
    p_uncond: float = 0.0,
    generator: torch.Generator | None = None,
    null_label: int | None = None,
) -> torch.Tensor:
    """Ho et al.'s simple loss: mean over the batch and pixels of (eps - eps_theta(x_t, t, label))^2.

    t ~ Uniform{0, ..., T-1} and eps ~ N(0, I) are drawn per example; x_t = q_sample(x0, t, eps).
    With ``p_uncond`` > 0 each label is replaced by the null label (``model.null_label``, or
    ``null_label``) with that probability: label dropout for classifier-free guidance.
    """
    B = x0.shape[0]
    t = torch.randint(0, schedule.T, (B,), generator=generator, device=generator.device if generator else "cpu")
    noise = _randn(x0.shape, generator, x0.device, x0.dtype)  # (B, C, H, W)
    x_t = schedule.q_sample(x0, t, noise)  # (B, C, H, W)
    if labels is not None and p_uncond > 0:
        drop = torch.rand(B, generator=generator, device=t.device).to(labels.device) < p_uncond  # (B,)
        labels = torch.where(drop, torch.full_like(labels, _null_label(model, null_label)), labels)
    eps_hat = model(x_t, t.to(x0.device), labels)  # (B, C, H, W)
    return F.mse_loss(eps_hat.float(), noise.float())


# -------------------------------------------------------------------- guidance and one step of each sampler


def guided_eps(
    model: EpsModel,
    x: torch.Tensor,
    t: torch.Tensor,
    labels: torch.Tensor | None = None,
    scale: float = 1.0,
    null_label: int | None = None,
) -> torch.Tensor:
    """eps_uncond + scale * (eps_cond - eps_uncond), both from ONE forward pass on a doubled batch.

    ``labels=None``: the model's own prediction without labels. ``scale == 1`` skips the doubled batch.
    """
    if labels is None or scale == 1.0:
        return model(x, t, labels).to(x.dtype)
    null = torch.full_like(labels, _null_label(model, null_label))  # (B,)
    eps = model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([labels, null])).to(x.dtype)  # (2B, ...)
    eps_cond, eps_uncond = eps.chunk(2)  # (B, ...) each
    return eps_uncond + scale * (eps_cond - eps_uncond)


def ddpm_step(
    schedule: NoiseSchedule,
    eps: torch.Tensor,
    x_t: torch.Tensor,
    t: int,
    *,
    variance: str = "posterior",
    noise: torch.Tensor | None = None,
    clip_x0: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One ancestral step x_t -> x_{t-1} given the predicted noise; returns (x_{t-1}, x0_hat).

    x_{t-1} = the posterior mean with x0_hat in place of x_0, plus sigma_t noise; sigma_t^2 = beta_tilde_t
    (``variance="posterior"``, diffusers' "fixed_small") or beta_t (``"beta"``, "fixed_large"); no noise at
    t = 0. ``clip_x0`` clamps x0_hat to [-1, 1] first. ``noise``: the N(0, I) draw (a fresh one when None).
    """
    if variance not in ("posterior", "beta"):
        raise ValueError(f"variance must be 'posterior' (beta_tilde_t) or 'beta' (beta_t), got {variance!r}.")
    x0_hat = schedule.predict_x0_from_eps(x_t, t, eps)
    if clip_x0:
        x0_hat = x0_hat.clamp(-1, 1)
    mean, post_var = schedule.posterior_mean_variance(x0_hat, x_t, t)
    if t == 0:
        return mean, x0_hat
    var = post_var if variance == "posterior" else schedule._at(schedule.betas, t, x_t)
    if noise is None:
        noise = torch.randn_like(x_t)
    return mean + var**0.5 * noise, x0_hat


def ddim_timesteps(T: int, steps: int) -> list[int]:
    """``steps`` evenly spaced steps from T - 1 down, ending at T / steps - 1 (diffusers' "trailing" spacing).

    For T = 1000 and steps = 50: [999, 979, ..., 19]; with steps = T: [T-1, ..., 0]. (diffusers' default
    "leading" spacing, [980, 960, ..., 0], can be passed to ``ddim_sample(timesteps=...)``.)
    """
    if not 1 <= steps <= T:
        raise ValueError(f"DDIM needs 1 <= steps <= T = {T}, got steps={steps}.")
    return [round((i + 1) * T / steps) - 1 for i in reversed(range(steps))]


def ddim_sigma(schedule: NoiseSchedule, t: int, t_prev: int, eta: float) -> float:
    """sigma = eta sqrt((1 - alpha_bar_t') / (1 - alpha_bar_t)) sqrt(1 - alpha_bar_t / alpha_bar_t'), t' = t_prev.

    ``t_prev = -1`` means "to clean data" (alpha_bar = 1, sigma = 0).
    """
    ab = schedule.alpha_bars[t].item()
    ab_prev = schedule.alpha_bars[t_prev].item() if t_prev >= 0 else 1.0
    return eta * math.sqrt((1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev))


def ddim_step(
    schedule: NoiseSchedule,
    eps: torch.Tensor,
    x_t: torch.Tensor,
    t: int,
    *,
    t_prev: int,
    eta: float = 0.0,
    noise: torch.Tensor | None = None,
    clip_x0: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One DDIM step x_t -> x_{t_prev} (t_prev < t; -1 = clean data); returns (x_{t_prev}, x0_hat).

    x_t' = sqrt(alpha_bar_t') x0_hat + sqrt(1 - alpha_bar_t' - sigma^2) eps + sigma noise, with sigma from
    ``ddim_sigma`` and ``noise`` as in ``ddpm_step``.

    With ``clip_x0`` x0_hat is clamped to [-1, 1] and eps is re-derived from it (as GLIDE does; diffusers'
    ``use_clipped_model_output=True``), so the two terms of the update agree. Keeping the unclamped eps
    (diffusers' default) gives an error that grows with the number of steps (notebook 08's pitfalls).
    """
    if not -1 <= t_prev < t:
        raise ValueError(f"ddim_step needs -1 <= t_prev < t, got t={t}, t_prev={t_prev}.")
    x0_hat = schedule.predict_x0_from_eps(x_t, t, eps)
    if clip_x0:
        x0_hat = x0_hat.clamp(-1, 1)
        eps = schedule.predict_eps_from_x0(x_t, t, x0_hat)  # the noise that x0_hat and x_t imply
    ab_prev = schedule.alpha_bars[t_prev].item() if t_prev >= 0 else 1.0
    sigma = ddim_sigma(schedule, t, t_prev, eta)
    x_prev = math.sqrt(ab_prev) * x0_hat + math.sqrt(max(1 - ab_prev - sigma**2, 0.0)) * eps
    if sigma > 0:
        x_prev = x_prev + sigma * (torch.randn_like(x_t) if noise is None else noise)
    return x_prev, x0_hat


# -------------------------------------------------------------------- samplers


class Trajectory(NamedTuple):
    steps: list[int]  # the step t each frame was taken at (after the update from t)
    x: torch.Tensor  # (K, B, C, H, W) the samples after those steps, on the CPU
    x0: torch.Tensor  # (K, B, C, H, W) the x0 predictions made at those steps, on the CPU


@dataclass(frozen=True)
class SamplerSettings:
    """What ``ddpm_sample`` and ``ddim_sample`` share; both take these fields as keywords."""

    labels: torch.Tensor | None = None  # (B,) class labels, or None for the model's unconditional prediction
    guidance_scale: float = 1.0  # w: eps_uncond + w (eps_cond - eps_uncond); 1 = plain conditional
    clip_x0: bool = False  # clamp x0_hat to [-1, 1] at every step (data scaled to [-1, 1])
    generator: torch.Generator | None = None  # the noise; None = torch's global generator
    device: torch.device | str | None = None  # None = the model's device
    progress: bool = True  # a tqdm bar
    return_trajectory: bool = False  # also return a Trajectory ...
    every: int | None = None  # ... with a frame every `every` steps (None: 100 for DDPM, 10 for DDIM)


def _settings(sampler: str, own: str, settings: dict) -> SamplerSettings:
    """``SamplerSettings(**settings)``, with an error that names what ``sampler`` does take."""
    names = [f.name for f in fields(SamplerSettings)]
    unknown = sorted(set(settings) - set(names))
    if unknown:
        raise TypeError(f"{sampler} got unexpected keyword(s) {unknown}; it takes {own} and the SamplerSettings "
                        f"fields {', '.join(names)}.")
    return SamplerSettings(**settings)


class _Plan(NamedTuple):
    """What one sampler brings to the shared loop."""

    steps: list[int]  # the steps t visited, decreasing; the loop goes from each t to the next (-1 after the last)
    step: Callable  # step(eps, x_t, t, t_prev, noise) -> (x_{t_prev}, x0_hat)
    uses_noise: Callable[[int, int], bool]  # whether the update from t to t_prev adds noise
    desc: str  # the progress bar's label
    every: int  # default spacing of trajectory frames


def _device_of(model, device) -> torch.device:
    if device is not None:
        return torch.device(device)
    try:
        return next(model.parameters()).device
    except (AttributeError, StopIteration):
        return torch.device("cpu")


@torch.no_grad()
def _sample_loop(model, schedule, shape, plan: _Plan, s: SamplerSettings, inpaint=None):
    """x_{T-1} ~ N(0, I), then ``plan.step`` for each step of ``plan``; ``inpaint`` = (known, mask) or None."""
    device = _device_of(model, s.device)
    x = _randn(shape, s.generator, device)  # x_{T-1} ~ N(0, I)
    labels = s.labels
    if labels is not None:
        labels = torch.as_tensor(labels, device=device).long()
        if labels.shape != (shape[0],):
            raise ValueError(f"labels must have shape ({shape[0]},) to match the batch, got {tuple(labels.shape)}.")
        if hasattr(model, "check_labels"):
            model.check_labels(labels)  # once here: the model checks GPU labels at no step of the loop
    noise_generator = _generator_on(device, s.generator)
    every_step = _draws_every_step(device)
    every = s.every if s.every is not None else plan.every
    pairs = list(zip(plan.steps, plan.steps[1:] + [-1]))  # (t, t_prev), the last one (t, -1)
    frames: list[tuple[int, torch.Tensor, torch.Tensor]] = []
    with eval_mode(model):
        for i, (t, t_prev) in enumerate(tqdm(pairs, desc=plan.desc, disable=not s.progress)):
            t_batch = torch.full((shape[0],), t, device=device, dtype=torch.long)  # (B,)
            eps = guided_eps(model, x, t_batch, labels, s.guidance_scale)
            noise = _randn(shape, noise_generator, device) if every_step or plan.uses_noise(t, t_prev) else None
            x, x0_hat = plan.step(eps, x, t, t_prev, noise)
            if inpaint is not None:  # keep the known pixels, noised to the level of x_{t_prev}
                known, mask = inpaint
                known_prev = known if t_prev < 0 else schedule.q_sample(known, t_prev,
                                                                        _randn(shape, noise_generator, device))
                x = mask * known_prev + (1 - mask) * x
            if s.return_trajectory and (i % every == 0 or t_prev < 0):
                frames.append((t, x.cpu(), x0_hat.cpu()))
    if not s.return_trajectory:
        return x
    return x, Trajectory([f[0] for f in frames], torch.stack([f[1] for f in frames]),
                         torch.stack([f[2] for f in frames]))


def ddpm_sample(model: EpsModel, schedule: NoiseSchedule, shape: tuple[int, ...], *, variance: str = "posterior",
                known: torch.Tensor | None = None, mask: torch.Tensor | None = None, **settings):
    """Ancestral sampling over all T steps: x_{T-1} ~ N(0, I), then ``ddpm_step`` for t = T-1, ..., 0.

    Returns samples of ``shape`` (B, C, H, W) on the model's device, or ``(samples, Trajectory)`` when
    ``return_trajectory``. ``variance`` as in ``ddpm_step``; ``settings``: the fields of ``SamplerSettings``.
    Inpainting: with ``known`` (B, C, H, W) data and ``mask`` (1 = known pixel), after every step the known
    pixels are replaced by q_sample(known, t - 1) (by ``known`` itself at the end).
    """
    s = _settings("ddpm_sample", "variance, known, mask", settings)
    if (known is None) != (mask is None):
        raise ValueError("Inpainting needs both known= (the image) and mask= (1 where a pixel is known).")
    inpaint = None
    if known is not None:
        device = _device_of(model, s.device)
        inpaint = (known.to(device), mask.to(device, known.dtype))

    def step(eps, x, t, t_prev, noise):
        return ddpm_step(schedule, eps, x, t, variance=variance, noise=noise, clip_x0=s.clip_x0)

    def uses_noise(t, t_prev):
        return t > 0  # the last step adds no noise

    plan = _Plan(list(range(schedule.T - 1, -1, -1)), step, uses_noise, "DDPM", every=100)  # T-1, ..., 0
    return _sample_loop(model, schedule, shape, plan, s, inpaint)


def ddim_sample(model: EpsModel, schedule: NoiseSchedule, shape: tuple[int, ...], *, steps: int = 50,
                eta: float = 0.0, timesteps: list[int] | None = None, **settings):
    """DDIM sampling on ``ddim_timesteps(T, steps)`` (or an explicit decreasing list ``timesteps``).

    eta = 0: deterministic (the same x_{T-1} always gives the same sample); eta = 1 with
    steps = T: DDPM with the posterior variance. ``settings`` as in ``ddpm_sample``.
    """
    s = _settings("ddim_sample", "steps, eta, timesteps", settings)
    ts = list(timesteps) if timesteps is not None else ddim_timesteps(schedule.T, steps)
    if any(b >= a for a, b in zip(ts, ts[1:])) or ts[0] >= schedule.T or ts[-1] < 0:
        raise ValueError(f"timesteps must decrease strictly within [0, {schedule.T}), got {ts[:5]}...")

    def step(eps, x, t, t_prev, noise):
        return ddim_step(schedule, eps, x, t, t_prev=t_prev, eta=eta, noise=noise, clip_x0=s.clip_x0)

    def uses_noise(t, t_prev):
        return ddim_sigma(schedule, t, t_prev, eta) > 0  # never for eta = 0

    return _sample_loop(model, schedule, shape, _Plan(ts, step, uses_noise, f"DDIM eta={eta:g}", every=10), s)


__all__ = [
    "NoiseSchedule", "diffusion_loss", "guided_eps", "ddpm_step", "ddim_step", "ddim_timesteps", "ddim_sigma",
    "Trajectory", "SamplerSettings", "ddpm_sample", "ddim_sample",
]
