"""CycleGAN for 28x28 images: unpaired translation between domains A and B (Zhu et al., 2017; notebook 06).

    G_ab: A -> B,  G_ba: B -> A            ResNet-style generators, images in [0, 1] -> [0, 1]
    D_a, D_b                               PatchGAN discriminators: one logit per image patch

The generators minimise least-squares adversarial terms (Mao et al., 2017; ``course_lib.gan``), plus
``lambda_cycle`` times the L1 cycle terms and ``lambda_identity`` times the L1 identity terms
(``generator_losses``). Each discriminator minimises the least-squares loss on real images of its domain
against detached translations into it (``discriminator_losses``).

Weights: our adversarial term carries a factor 1/2, so ``lambda_cycle=5`` is the paper's 10 (the whole
objective halved, which Adam does not notice). The identity term is off by default (``lambda_identity=0``).
When B is A inverted it rewards the do-nothing map; with the paper's weight (2.5 here) short CPU runs on
notebook 06's domains (250 to 500 steps of batch 32) preserved under 40% of the labels, over 95% without.

Notebook 06's domains hide a ground truth: A is MNIST digits, B is ``restyle(x) = 1 - dilate(x)`` of
*other* digits, so a translation is scored against restyle(x) or x (``translation_scores``).

Usage::

    domains = make_unpaired_domains(train.x, train.y, generator=g)     # domains.a, domains.b
    model = CycleGAN(CycleGANConfig())
    history = train_cyclegan(model, domains.a, domains.b, steps=2_000, device=device)
    scores = evaluate_translation(model, test.x, test.y)                # label accuracy, pixel errors

``generator_step`` and ``discriminator_step`` are one training step each, written to be read line by line;
``train_cyclegan`` alternates them in ``course_lib.train.train_loop``.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .checks import IMAGE_SHAPE, check_image_batch, check_labels
from .gan import discriminator_loss, generator_loss
from .precision import Precision, precision_policy
from .train import History, eval_mode, optimizer_step, train_loop


@dataclass
class CycleGANConfig:
    channels: int = 1  # image channels of both domains
    g_width: int = 16  # generator channels at 28x28 (twice as many at 14x14)
    n_res_blocks: int = 2  # residual blocks at 14x14
    d_width: int = 16  # discriminator channels after its first layer
    lambda_cycle: float = 5.0  # weight of the cycle loss (the paper's 10, halved like our GAN term)
    lambda_identity: float = 0.0  # identity loss weight (paper: 0.5 * lambda_cycle; harmful across palettes)
    lr: float = 2e-4  # Adam learning rate of all four networks
    betas: tuple[float, float] = (0.5, 0.999)  # Adam betas, as in the DCGAN and CycleGAN papers


def check_images(x: torch.Tensor, name: str, channels: int = 1) -> torch.Tensor:
    """A clear ValueError unless ``x`` has shape (B, channels, 28, 28)."""
    return check_image_batch(x, name, (channels, *IMAGE_SHAPE[1:]))


# ----------------------------------------------------------------------------- the two domains


def dilate(x: torch.Tensor) -> torch.Tensor:
    """Grey-level dilation with a 3x3 square: each pixel becomes the max of its 3x3 neighbourhood."""
    check_images(x, "dilate")
    return F.max_pool2d(x, kernel_size=3, stride=1, padding=1)  # (B, 1, 28, 28); padding is -inf, never chosen


def restyle(x: torch.Tensor) -> torch.Tensor:
    """Domain B's style: thicken the strokes, then invert. restyle(x) = 1 - dilate(x), in [0, 1]."""
    return 1.0 - dilate(x)  # (B, 1, 28, 28)


def unrestyle_inversion(y: torch.Tensor) -> torch.Tensor:
    """Undo only the inversion of ``restyle``: 1 - y. On restyle(x) it gives dilate(x), not x."""
    check_images(y, "unrestyle_inversion")
    return 1.0 - y


@dataclass
class UnpairedDomains:
    """Two unpaired training sets; the labels and B's sources are for evaluation only, never for training."""

    a: torch.Tensor  # (N_a, 1, 28, 28) digits
    b: torch.Tensor  # (N_b, 1, 28, 28) restyled *other* digits
    a_labels: torch.Tensor  # (N_a,)
    b_labels: torch.Tensor  # (N_b,) labels of the digits behind b
    b_sources: torch.Tensor  # (N_b, 1, 28, 28) the digits x with restyle(x) = b: B -> A's hidden answer


def make_unpaired_domains(x: torch.Tensor, y: torch.Tensor,
                          generator: torch.Generator | None = None) -> UnpairedDomains:
    """Shuffle (x, y), give the first half to A as they are and the second half, restyled, to B.

    No digit appears in both domains, so there is no pair (a, b) of the same digit to learn from.
    """
    check_images(x, "make_unpaired_domains")
    y = check_labels(y, x.shape[0], "make_unpaired_domains: labels")
    if x.shape[0] < 2:
        raise ValueError("make_unpaired_domains needs at least 2 images (one per domain).")
    perm = torch.randperm(x.shape[0], generator=generator)  # (N,)
    half = x.shape[0] // 2
    ia, ib = perm[:half], perm[half:]
    return UnpairedDomains(a=x[ia], b=restyle(x[ib]), a_labels=y[ia], b_labels=y[ib], b_sources=x[ib])


# ----------------------------------------------------------------------------- the networks


class ResidualBlock(nn.Module):
    """x + conv-norm-relu-conv-norm(x): the block learns a correction to its input."""

    def __init__(self, width: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(width, width, 3, padding=1), nn.InstanceNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1), nn.InstanceNorm2d(width),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)  # (B, width, H, W)


class ResnetGenerator(nn.Module):
    """The CycleGAN generator (Johnson et al., 2016) scaled down: 28x28 -> 14x14 -> residual blocks -> 28x28.

    The output layer is 3x3, not the paper's 7x7 (on a CPU that would cost a fifth of the step).
    """

    def __init__(self, config: CycleGANConfig | None = None):
        super().__init__()
        self.config = config = config or CycleGANConfig()
        c, w = config.channels, config.g_width
        self.net = nn.Sequential(
            nn.Conv2d(c, w, 7, padding=3), nn.InstanceNorm2d(w), nn.ReLU(),  # (B, w, 28, 28)
            nn.Conv2d(w, 2 * w, 3, stride=2, padding=1), nn.InstanceNorm2d(2 * w), nn.ReLU(),  # (B, 2w, 14, 14)
            *[ResidualBlock(2 * w) for _ in range(config.n_res_blocks)],  # (B, 2w, 14, 14)
            nn.ConvTranspose2d(2 * w, w, 3, stride=2, padding=1, output_padding=1),  # (B, w, 28, 28)
            nn.InstanceNorm2d(w), nn.ReLU(),
            nn.Conv2d(w, c, 3, padding=1),  # (B, c, 28, 28) logits
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, C, 28, 28) in [0, 1] -> translations (B, C, 28, 28) in (0, 1) (a sigmoid)."""
        check_images(x, "ResnetGenerator", self.config.channels)
        return torch.sigmoid(self.net(x))  # (B, C, 28, 28)


class PatchDiscriminator(nn.Module):
    """PatchGAN (Isola et al., 2017): a 7x7 grid of real/fake logits, one per window of the image.

    Logit (i, j) sees the input pixels 4i-11 .. 4i+14 (rows) and 4j-11 .. 4j+14 (columns), a 26x26
    window cut at the border. The loss is averaged over every window.
    """

    def __init__(self, config: CycleGANConfig | None = None):
        super().__init__()
        self.config = config = config or CycleGANConfig()
        c, w = config.channels, config.d_width
        self.net = nn.Sequential(
            nn.Conv2d(c, w, 4, stride=2, padding=1), nn.LeakyReLU(0.2),  # (B, w, 14, 14), no norm on the first layer
            nn.Conv2d(w, 2 * w, 4, stride=2, padding=1), nn.InstanceNorm2d(2 * w), nn.LeakyReLU(0.2),  # (B, 2w, 7, 7)
            nn.Conv2d(2 * w, 4 * w, 3, padding=1), nn.InstanceNorm2d(4 * w), nn.LeakyReLU(0.2),  # (B, 4w, 7, 7)
            nn.Conv2d(4 * w, 1, 3, padding=1),  # (B, 1, 7, 7) logits, one per patch
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, C, 28, 28) in [0, 1] -> patch logits (B, 1, 7, 7)."""
        check_images(x, "PatchDiscriminator", self.config.channels)
        return self.net(x)  # (B, 1, 7, 7)


class CycleGAN(nn.Module):
    """The four networks in one module (one ``state_dict``); ``optimizers()`` gives their two Adams."""

    def __init__(self, config: CycleGANConfig | None = None):
        super().__init__()
        self.config = config = config or CycleGANConfig()
        self.g_ab = ResnetGenerator(config)  # A -> B
        self.g_ba = ResnetGenerator(config)  # B -> A
        self.d_a = PatchDiscriminator(config)  # real A vs G_ba(b)
        self.d_b = PatchDiscriminator(config)  # real B vs G_ab(a)

    def generators(self) -> list[nn.Parameter]:
        return [*self.g_ab.parameters(), *self.g_ba.parameters()]

    def discriminators(self) -> list[nn.Parameter]:
        return [*self.d_a.parameters(), *self.d_b.parameters()]

    def optimizers(self) -> tuple[torch.optim.Adam, torch.optim.Adam]:
        """Adam for the generators and Adam for the discriminators, with the config's lr and betas."""
        cfg = self.config
        return (torch.optim.Adam(self.generators(), lr=cfg.lr, betas=cfg.betas),
                torch.optim.Adam(self.discriminators(), lr=cfg.lr, betas=cfg.betas))


# ----------------------------------------------------------------------------- the losses


def cycle_loss(real: torch.Tensor, reconstructed: torch.Tensor) -> torch.Tensor:
    """Mean absolute error |F(G(x)) - x|_1 between images and their round trips (a scalar)."""
    if real.shape != reconstructed.shape:
        raise ValueError(f"cycle_loss: shapes differ: {tuple(real.shape)} vs {tuple(reconstructed.shape)}.")
    return (reconstructed - real).abs().mean()


def identity_loss(real: torch.Tensor, mapped: torch.Tensor) -> torch.Tensor:
    """Mean absolute error |G(y) - y|_1: a generator fed an image of its *target* domain should keep it."""
    if real.shape != mapped.shape:
        raise ValueError(f"identity_loss: shapes differ: {tuple(real.shape)} vs {tuple(mapped.shape)}.")
    return (mapped - real).abs().mean()


def set_requires_grad(modules: list[nn.Module], flag: bool) -> None:
    for module in modules:
        module.requires_grad_(flag)


def generator_losses(model: CycleGAN, real_a: torch.Tensor, real_b: torch.Tensor, *,
                     lambda_cycle: float | None = None, lambda_identity: float | None = None):
    """The generators' objective on one batch of each domain: ``(total, terms, (fake_a, fake_b))``.

    ``terms``: the parts as detached 0-d tensors (``gan_ab``, ``gan_ba``, ``cycle_a``, ``cycle_b``, ``idt_a``,
    ``idt_b``); ``float(t)`` waits for the GPU, so the training loop reads them only when it logs.
    ``lambda_*`` default to the model's config; 0 switches a term off (it is then not computed).
    """
    cfg = model.config
    lambda_cycle = cfg.lambda_cycle if lambda_cycle is None else lambda_cycle
    lambda_identity = cfg.lambda_identity if lambda_identity is None else lambda_identity
    check_images(real_a, "generator_losses (real_a)", cfg.channels)
    check_images(real_b, "generator_losses (real_b)", cfg.channels)

    fake_b = model.g_ab(real_a)  # (B, 1, 28, 28)  a translated to B
    fake_a = model.g_ba(real_b)  # (B, 1, 28, 28)  b translated to A
    gan_ab = generator_loss(model.d_b(fake_b), "least_squares")  # fool D_b: mean (D_b(G_ab(a)) - 1)^2
    gan_ba = generator_loss(model.d_a(fake_a), "least_squares")  # fool D_a
    total = gan_ab + gan_ba
    terms = {"gan_ab": gan_ab.detach(), "gan_ba": gan_ba.detach()}
    if lambda_cycle:
        cycle_a = cycle_loss(real_a, model.g_ba(fake_b))  # |G_ba(G_ab(a)) - a|_1
        cycle_b = cycle_loss(real_b, model.g_ab(fake_a))  # |G_ab(G_ba(b)) - b|_1
        total = total + lambda_cycle * (cycle_a + cycle_b)
        terms.update(cycle_a=cycle_a.detach(), cycle_b=cycle_b.detach())
    if lambda_identity:
        idt_a = identity_loss(real_a, model.g_ba(real_a))  # |G_ba(a) - a|_1
        idt_b = identity_loss(real_b, model.g_ab(real_b))  # |G_ab(b) - b|_1
        total = total + lambda_identity * (idt_a + idt_b)
        terms.update(idt_a=idt_a.detach(), idt_b=idt_b.detach())
    return total, terms, (fake_a, fake_b)


def discriminator_losses(model: CycleGAN, real_a: torch.Tensor, real_b: torch.Tensor,
                         fake_a: torch.Tensor, fake_b: torch.Tensor):
    """Least-squares losses of D_a (real a vs fake_a) and D_b (real b vs fake_b); the fakes are detached here.

    Returns ``(total, {"d_a": ..., "d_b": ...})``, the terms as detached 0-d tensors.
    """
    d_a = discriminator_loss(model.d_a(real_a), model.d_a(fake_a.detach()), "least_squares")  # real a -> 1, fake -> 0
    d_b = discriminator_loss(model.d_b(real_b), model.d_b(fake_b.detach()), "least_squares")  # real b -> 1, fake -> 0
    return d_a + d_b, {"d_a": d_a.detach(), "d_b": d_b.detach()}


def generator_step(model: CycleGAN, opt_g: torch.optim.Optimizer, real_a: torch.Tensor, real_b: torch.Tensor,
                   policy: Precision | None = None, scaler: torch.amp.GradScaler | None = None, **weights: float):
    """One optimizer step of both generators, the discriminators frozen meanwhile. Returns (terms, fakes).

    ``policy`` (default fp32) and ``scaler`` (default ``policy.grad_scaler()``) set the mixed precision;
    ``train_cyclegan`` passes one scaler per optimizer for the whole run.
    """
    policy = policy if policy is not None else precision_policy(real_a.device, enabled=False)
    scaler = scaler if scaler is not None else policy.grad_scaler()
    set_requires_grad([model.d_a, model.d_b], False)  # no gradients into D: faster, and D stays as it is
    with policy.autocast():
        total, terms, fakes = generator_losses(model, real_a, real_b, **weights)
    optimizer_step(total, opt_g, scaler)
    set_requires_grad([model.d_a, model.d_b], True)
    terms["g_total"] = total.detach()
    return terms, fakes


def discriminator_step(model: CycleGAN, opt_d: torch.optim.Optimizer, real_a: torch.Tensor, real_b: torch.Tensor,
                       fake_a: torch.Tensor, fake_b: torch.Tensor, policy: Precision | None = None,
                       scaler: torch.amp.GradScaler | None = None) -> dict[str, torch.Tensor]:
    """One step of both discriminators on detached fakes; ``policy``, ``scaler`` as for ``generator_step``."""
    policy = policy if policy is not None else precision_policy(real_a.device, enabled=False)
    scaler = scaler if scaler is not None else policy.grad_scaler()
    with policy.autocast():
        total, terms = discriminator_losses(model, real_a, real_b, fake_a, fake_b)
    optimizer_step(total, opt_d, scaler)
    return terms


# ----------------------------------------------------------------------------- training and evaluation


def random_batches(x: torch.Tensor, batch_size: int,
                   generator: torch.Generator | None = None) -> Iterator[torch.Tensor]:
    """An endless stream of random batches (B, ...) of rows of ``x``, drawn with replacement."""
    while True:
        yield x[torch.randint(x.shape[0], (batch_size,), generator=generator)]


def train_cyclegan(model: CycleGAN, a: torch.Tensor, b: torch.Tensor, *, steps: int, batch_size: int = 64,
                   device: torch.device | str | None = None, generator: torch.Generator | None = None,
                   amp: bool | None = None, lambda_cycle: float | None = None, lambda_identity: float | None = None,
                   **loop: Any) -> History:
    """Alternate ``generator_step`` and ``discriminator_step`` for ``steps`` steps on random batches.

    ``a``, ``b``: the two unpaired training sets, on the CPU. ``lambda_cycle`` / ``lambda_identity`` override
    the config (e.g. ``lambda_cycle=0`` for the ablation). ``amp``: mixed precision as ``precision_policy``
    chooses (None), off (False) or also on a CPU (True). Other keywords (``history``, ``log_every``,
    ``progress``, ``desc``) go to ``train.train_loop``. Returns a ``History`` of every loss term.
    """
    check_images(a, "train_cyclegan (a)", model.config.channels)
    check_images(b, "train_cyclegan (b)", model.config.channels)
    misspelt = [k for k in loop if k.startswith("lambda")]
    if misspelt:
        raise TypeError(f"train_cyclegan: unknown keyword(s) {misspelt}; "
                        "the loss weights are lambda_cycle / lambda_identity.")
    weights = {k: v for k, v in (("lambda_cycle", lambda_cycle), ("lambda_identity", lambda_identity)) if v is not None}
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.to(device).train()
    opt_g, opt_d = model.optimizers()
    policy = precision_policy(device, amp)
    scaler_g, scaler_d = policy.grad_scaler(), policy.grad_scaler()  # one per optimizer (pass-throughs unless fp16)

    def cyclegan_step(batches, step, progress) -> dict[str, torch.Tensor]:
        real_a, real_b = next(batches)  # (B, 1, 28, 28) each
        terms, (fake_a, fake_b) = generator_step(model, opt_g, real_a, real_b, policy, scaler_g, **weights)
        d_terms = discriminator_step(model, opt_d, real_a, real_b, fake_a, fake_b, policy, scaler_d)
        return {"g_total": terms.pop("g_total"), **d_terms, **terms}  # the progress bar shows the first five

    pairs = zip(random_batches(a, batch_size, generator), random_batches(b, batch_size, generator))
    history = train_loop(cyclegan_step, pairs, steps=steps, device=device, **{"desc": "CycleGAN", **loop})
    model.eval()
    return history


@torch.no_grad()
def translate(net: nn.Module, x: torch.Tensor, batch_size: int = 500,
              device: torch.device | str | None = None) -> torch.Tensor:
    """Apply a generator to many images in batches without gradients; the result is on the CPU."""
    device = torch.device(device) if device is not None else next(net.parameters()).device
    with eval_mode(net):
        return torch.cat([net(x[i : i + batch_size].to(device)).float().cpu()
                          for i in range(0, x.shape[0], batch_size)])


def mean_abs_error(x_hat: torch.Tensor, x: torch.Tensor) -> float:
    """Mean absolute pixel error between two image batches of the same shape."""
    if x_hat.shape != x.shape:
        raise ValueError(f"mean_abs_error: shapes differ: {tuple(x_hat.shape)} vs {tuple(x.shape)}.")
    return (x_hat.double() - x.double()).abs().mean().item()


def translation_scores(to_b: torch.Tensor, to_a: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
                       dataset: str = "mnist") -> dict[str, float]:
    """Score translations of test digits ``x`` (labels ``y``) against the hidden ground truth.

    ``to_b`` are A -> B translations of x (truth: restyle(x)); ``to_a`` are B -> A translations of
    restyle(x) (truth: x). Label accuracy uses the course classifier: on ``to_a`` directly, on
    ``to_b`` after undoing the inversion (1 - to_b), since the classifier knows white-on-black digits.
    """
    from .fcd import classifier_accuracy

    truth_b = restyle(x)  # (N, 1, 28, 28)
    return {
        "a2b_label_accuracy": classifier_accuracy(unrestyle_inversion(to_b).clamp(0, 1), y, dataset),
        "b2a_label_accuracy": classifier_accuracy(to_a.clamp(0, 1), y, dataset),
        "a2b_mae": mean_abs_error(to_b, truth_b),
        "b2a_mae": mean_abs_error(to_a, x),
    }


def evaluate_translation(model: CycleGAN, x: torch.Tensor, y: torch.Tensor, dataset: str = "mnist",
                         batch_size: int = 500) -> dict[str, float]:
    """``translation_scores`` of ``model``: G_ab on the test digits x, G_ba on restyle(x)."""
    check_images(x, "evaluate_translation", model.config.channels)
    to_b = translate(model.g_ab, x, batch_size)  # (N, 1, 28, 28)
    to_a = translate(model.g_ba, restyle(x), batch_size)  # (N, 1, 28, 28)
    return translation_scores(to_b, to_a, x, y, dataset)


def baseline_scores(x: torch.Tensor, y: torch.Tensor, dataset: str = "mnist") -> dict[str, dict[str, float]]:
    """What trivial maps score on the same test: the identity, the inversion 1 - x, and the truth itself.

    ``"truth"`` (the exact A -> B map, and the real digit for B -> A) gives the ceiling of the
    label accuracies: the classifier is not perfect, and on 1 - restyle(x) = dilate(x) it sees thick digits.
    """
    truth_b = restyle(x)
    return {
        "identity": translation_scores(x, truth_b, x, y, dataset),
        "inversion": translation_scores(1 - x, 1 - truth_b, x, y, dataset),
        "truth": translation_scores(truth_b, x, x, y, dataset),
    }


__all__ = [
    "CycleGANConfig", "check_images", "dilate", "restyle", "unrestyle_inversion", "UnpairedDomains",
    "make_unpaired_domains", "ResidualBlock", "ResnetGenerator", "PatchDiscriminator", "CycleGAN",
    "cycle_loss", "identity_loss", "set_requires_grad", "generator_losses", "discriminator_losses",
    "generator_step", "discriminator_step", "random_batches", "train_cyclegan", "translate",
    "mean_abs_error", "translation_scores", "evaluate_translation", "baseline_scores",
]
