"""A text-conditioned latent UNet, eps_theta(z_t, t, caption), that reads the caption through cross-attention.

Inputs: noisy latents z_t (B, 4, 7, 7) (``course_lib.latent``), steps t, and a caption as per-token vectors
of a frozen text encoder (B, L, 384) with a mask (B, L), True = a real token (``course_lib.captions``).
The caption enters only through cross-attention, after every ResBlock and in the middle (queries from the
image, keys and values from the tokens, as in Stable Diffusion; notebook 08b); no pooled text vector joins the
time embedding. Time embedding and ResBlocks are ``course_lib.unet``'s; by default two levels, 7x7 and 4x4.

The null caption, for classifier-free guidance and for ``forward(z_t, t)`` without a caption: one learned
384-d vector in position 0, every other position padding. The unconditional prediction therefore needs
no text encoder. (Stable Diffusion encodes the empty prompt "" instead.)

``CaptionConditioned`` adapts a TextUNet to ``course_lib.diffusion``'s ``model(x_t, t, labels)``, so
``text_diffusion_loss`` and ``text_ddim_sample`` are ``diffusion_loss`` and ``ddim_sample``, condition
dropout and guidance included; no diffusion maths is repeated here.

Usage::

    model = TextUNet(TextUNetConfig())
    loss = text_diffusion_loss(model, schedule, z0, tokens, mask, p_uncond=0.1)    # z0 = s * mu, unit std
    z = text_ddim_sample(model, schedule, tokens, mask, steps=50, guidance_scale=3.0)   # (B, 4, 7, 7)
    images = decode_latents(autoencoder, z, scale=s)
    maps = cross_attention_maps(model, z_t, t, tokens, mask)   # {layer: (B, h, w, L)}, summing to 1 over L
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .attention import MultiHeadAttention
from .checks import check_image_batch, check_timesteps
from .diffusion import NoiseSchedule, ddim_sample, diffusion_loss
from .train import eval_mode
from .unet import Downsample, Level, ResBlock, SelfAttention, Upsample, sinusoidal_embedding


@dataclass
class TextUNetConfig:
    in_channels: int = 4  # latent channels
    base_channels: int = 32  # channels at the latent's resolution; level i: base_channels * channel_mults[i]
    channel_mults: tuple[int, ...] = (1, 2)  # one entry per resolution: 7, 4 for a 7x7 latent
    blocks_per_level: int = 1  # ResBlocks per level on the way down (as many on the way up)
    context_dim: int = 384  # size of the text encoder's token vectors (all-MiniLM-L6-v2: 384)
    context_width: int = 64  # tokens are first mapped (LayerNorm, Linear) to this size, once for all layers
    heads: int = 4  # attention heads (self and cross); channels must be divisible by it
    # Self-attention before each cross-attention. Off by default: on a 7x7 latent the convs already see
    # the whole latent after the first level, and on a CPU it costs about a third of a training step.
    self_attention: bool = False
    groups: int = 8  # GroupNorm groups; every channel count must be divisible by it
    dropout: float = 0.0  # dropout inside ResBlocks
    latent_size: tuple[int, int] = (7, 7)  # (h, w) of the latents; used by text_ddim_sample

    @property
    def time_dim(self) -> int:
        return 4 * self.base_channels  # size of the time embedding vector


class CrossAttention(nn.Module):
    """Image positions (queries) attend to caption tokens (keys, values), padding masked, plus a residual.

    x (B, C, H, W), context (B, L, D), mask (B, L) bool (True = real token) -> (B, C, H, W).
    With ``keep_weights = True`` the last call's attention weights are kept in ``weights``
    (B, heads, H, W, L) (computed by the explicit reference attention instead of the fused kernel).
    """

    def __init__(self, channels: int, context_dim: int, heads: int, groups: int):
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels)
        self.context_norm = nn.LayerNorm(context_dim)
        # q from x, k and v from the context; runs F.scaled_dot_product_attention
        self.attn = MultiHeadAttention(channels, heads, cross=True, d_context=context_dim)
        self.keep_weights = False
        self.weights: torch.Tensor | None = None

    def forward(self, x: torch.Tensor, context: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        q = self.norm(x).flatten(2).transpose(1, 2)  # (B, HW, C): one query per position
        c = self.context_norm(context)  # (B, L, D)
        key_mask = mask[:, None, None, :]  # (B, 1, 1, L): the same padding hidden from every head and query
        if self.keep_weights:
            out, w = self.attn(q, c, mask=key_mask, return_weights=True)
            self.weights = w.detach().reshape(B, -1, H, W, w.shape[-1])  # -> (B, heads, H, W, L)
        else:
            out = self.attn(q, c, mask=key_mask)  # (B, HW, C)
        return x + out.transpose(1, 2).reshape(B, C, H, W)


class TextAttention(nn.Module):
    """Self-attention over the positions (optional), then cross-attention to the caption."""

    def __init__(self, channels: int, cfg: TextUNetConfig):
        super().__init__()
        self.self_attn = SelfAttention(channels, cfg.heads, cfg.groups) if cfg.self_attention else nn.Identity()
        self.cross = CrossAttention(channels, cfg.context_width, cfg.heads, cfg.groups)

    def forward(self, x: torch.Tensor, context: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.cross(self.self_attn(x), context, mask)  # (B, C, H, W)


class TextUNet(nn.Module):
    def __init__(self, config: TextUNetConfig | None = None):
        super().__init__()
        self.config = cfg = config or TextUNetConfig()
        chans = [cfg.base_channels * m for m in cfg.channel_mults]  # e.g. [32, 64]
        for ch in [cfg.base_channels, *chans]:
            if ch % cfg.groups or ch % cfg.heads:
                raise ValueError(f"TextUNetConfig: {ch} channels are not divisible by groups={cfg.groups} "
                                 f"and heads={cfg.heads}; change base_channels, groups or heads.")
        n_levels, d = len(chans), cfg.time_dim
        self.time_mlp = nn.Sequential(nn.Linear(cfg.base_channels, d), nn.SiLU(), nn.Linear(d, d))
        self.null_token = nn.Parameter(torch.randn(cfg.context_dim))  # the learned null caption (position 0)
        self.text_proj = nn.Sequential(nn.LayerNorm(cfg.context_dim), nn.Linear(cfg.context_dim, cfg.context_width))

        self.stem = nn.Conv2d(cfg.in_channels, cfg.base_channels, 3, padding=1)
        self.down = nn.ModuleList()
        ch = cfg.base_channels
        for i, out in enumerate(chans):
            blocks, attns = [], []
            for _ in range(cfg.blocks_per_level):
                blocks.append(ResBlock(ch, out, d, cfg.groups, cfg.dropout))
                attns.append(TextAttention(out, cfg))
                ch = out
            self.down.append(Level(blocks, attns, Downsample(ch) if i < n_levels - 1 else nn.Identity()))

        self.mid1 = ResBlock(ch, ch, d, cfg.groups, cfg.dropout)
        self.mid_attn = TextAttention(ch, cfg)
        self.mid2 = ResBlock(ch, ch, d, cfg.groups, cfg.dropout)

        self.up = nn.ModuleList()  # from the lowest resolution back to the latent's
        for i in reversed(range(n_levels)):
            blocks, attns = [], []
            for _ in range(cfg.blocks_per_level):
                blocks.append(ResBlock(ch + chans[i], chans[i], d, cfg.groups, cfg.dropout))  # [h, skip] -> out
                attns.append(TextAttention(chans[i], cfg))
                ch = chans[i]
            self.up.append(Level(blocks, attns, Upsample(ch) if i > 0 else nn.Identity()))

        self.out_norm = nn.GroupNorm(cfg.groups, ch)
        self.out_conv = nn.Conv2d(ch, cfg.in_channels, 3, padding=1)

    def null_condition(self, batch: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The null caption for ``batch`` examples, padded to ``length``: tokens (B, L, D), mask (B, L)."""
        tokens = F.pad(self.null_token[None, None, :], (0, 0, 0, length - 1)).expand(batch, -1, -1)  # (B, L, D)
        mask = torch.zeros(batch, length, dtype=torch.bool, device=tokens.device)
        mask[:, 0] = True
        return tokens, mask

    def forward(self, x: torch.Tensor, t: torch.Tensor | int, context: torch.Tensor | None = None,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        """Predicted noise (B, C, h, w) in z_t (B, C, h, w) at t ((B,) ints or one int), given the caption.

        context (B, L, D), mask (B, L). ``context=None``: the null caption; ``mask=None``: all tokens real.
        """
        t, context, mask = self._check_inputs(x, t, context, mask)
        emb = self.time_mlp(sinusoidal_embedding(t, self.config.base_channels))  # (B, d)
        context = self.text_proj(context)  # (B, L, context_width), shared by every cross-attention layer

        h = self.stem(x)  # (B, c, h, w)
        skips = []
        for level in self.down:
            for block, attn in zip(level.blocks, level.attns):
                h = attn(block(h, emb), context, mask)  # (B, c_i, h_i, w_i)
                skips.append(h)
            h = level.resample(h)  # (B, c_i, ceil(h_i / 2), ceil(w_i / 2)), except at the lowest level

        h = self.mid2(self.mid_attn(self.mid1(h, emb), context, mask), emb)

        for level in self.up:
            for block, attn in zip(level.blocks, level.attns):
                h = attn(block(torch.cat([h, skips.pop()], dim=1), emb), context, mask)  # (B, c_i, h_i, w_i)
            if skips:
                h = level.resample(h, skips[-1].shape[-2:])  # to the size of the next skip (4 -> 7)
        return self.out_conv(F.silu(self.out_norm(h)))  # (B, C, h, w)

    def _check_inputs(self, x, t, context, mask):
        cfg = self.config
        check_image_batch(x, "TextUNet", (cfg.in_channels, "h", "w"), what="latents")
        B = x.shape[0]
        t = check_timesteps(t, B, "TextUNet", x.device)
        if context is None:
            if mask is not None:
                raise ValueError("A mask was given without a context; pass both, or neither for the null caption.")
            context, mask = self.null_condition(B, 1)
            return t, context.to(x.dtype), mask
        if context.ndim != 3 or context.shape[0] != B or context.shape[2] != cfg.context_dim:
            raise ValueError(
                f"TextUNet expects caption tokens of shape ({B}, L, {cfg.context_dim}), got {tuple(context.shape)}. "
                f"(One caption per latent; context_dim={cfg.context_dim} must match the text encoder.)")
        if mask is None:
            mask = torch.ones(context.shape[:2], dtype=torch.bool, device=x.device)
        mask = torch.as_tensor(mask, device=x.device)
        if mask.shape != context.shape[:2]:
            raise ValueError(f"The caption mask must have shape {tuple(context.shape[:2])} (B, L), "
                             f"got {tuple(mask.shape)}.")
        mask = mask.bool()
        if not mask.any(dim=1).all():
            raise ValueError("A caption's mask has no real token (all padding): attention would have nothing to "
                             "attend to. Use context=None, or null_condition(), for 'no caption'.")
        return t, context.to(x.dtype), mask


# -------------------------------------------------------------------- attention maps


@contextlib.contextmanager
def _keeping_weights(model: TextUNet):
    layers = {name: m for name, m in model.named_modules() if isinstance(m, CrossAttention)}
    for m in layers.values():
        m.keep_weights = True
    try:
        yield layers
    finally:
        for m in layers.values():
            m.keep_weights, m.weights = False, None


@torch.no_grad()
def cross_attention_maps(model: TextUNet, x: torch.Tensor, t: torch.Tensor | int, context: torch.Tensor,
                         mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Cross-attention weights of one eval-mode forward pass, averaged over heads: {layer: (B, h_i, w_i, L)}.

    maps[name][b, i, j, k] = how much position (i, j) of that layer attends to token k of caption b;
    each position's weights sum to 1 over the real tokens (0 on padding). On the CPU.
    """
    with eval_mode(model), _keeping_weights(model) as layers:
        model(x, t, context, mask)
        return {name: layer.weights.mean(1).cpu() for name, layer in layers.items()}  # (B, h_i, w_i, L) each


# -------------------------------------------------------------------- diffusion.py's interface


class CaptionConditioned(nn.Module):
    """``model(x_t, t, labels)`` for ``course_lib.diffusion``: label i = caption i of ``context``, B = null.

    context (B, L, D) and mask (B, L) hold one caption per row. A batch of labels (any length, e.g. the
    doubled batch of guidance) picks its captions by row.
    """

    def __init__(self, model: TextUNet, context: torch.Tensor, mask: torch.Tensor | None = None):
        super().__init__()
        if context.ndim != 3:
            raise ValueError(f"CaptionConditioned expects caption tokens (B, L, D), got {tuple(context.shape)}.")
        self.model = model
        self.context = context
        self.mask = torch.ones(context.shape[:2], dtype=torch.bool) if mask is None else mask.bool()

    @property
    def null_label(self) -> int:
        return self.context.shape[0]

    def forward(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if labels is None:
            return self.model(x, t)  # the null caption
        K, L = self.context.shape[:2]
        labels = labels.to(x.device)
        rows = labels.clamp(max=K - 1)
        context, mask = self.context.to(x.device)[rows], self.mask.to(x.device)[rows]  # (B, L, D), (B, L)
        null_context, null_mask = self.model.null_condition(len(labels), L)
        is_null = labels == K  # (B,)
        context = torch.where(is_null[:, None, None], null_context.to(context.dtype), context)
        mask = torch.where(is_null[:, None], null_mask, mask)
        return self.model(x, t, context, mask)


def text_diffusion_loss(model: TextUNet, schedule: NoiseSchedule, z0: torch.Tensor, context: torch.Tensor,
                        mask: torch.Tensor | None = None, p_uncond: float = 0.1,
                        generator: torch.Generator | None = None) -> torch.Tensor:
    """``diffusion_loss`` with captions, each replaced by the null caption with probability ``p_uncond``.

    z0 (B, C, h, w): latents scaled to about unit std (latent scale factor); context (B, L, D), mask (B, L).
    """
    if context.shape[0] != z0.shape[0]:
        raise ValueError(f"One caption per latent: got {context.shape[0]} captions for {z0.shape[0]} latents.")
    labels = torch.arange(z0.shape[0], device=z0.device)  # label i = caption i
    return diffusion_loss(CaptionConditioned(model, context, mask), schedule, z0, labels, p_uncond, generator)


def text_ddim_sample(model: TextUNet, schedule: NoiseSchedule, context: torch.Tensor, mask: torch.Tensor | None = None,
                     *, guidance_scale: float = 3.0, progress: bool = False, **settings):
    """``ddim_sample`` from one caption per sample: returns latents (B, C, h, w).

    guidance_scale w: eps = eps_null + w (eps_caption - eps_null); 1 = plain conditional, 0 = ignore
    the caption. ``settings``: the other keywords of ``ddim_sample`` (steps, eta, generator, ...) but labels.
    Leave ``clip_x0`` off: latents are not confined to [-1, 1] as pixels are.
    For n samples of one caption pass ``tokens.expand(n, -1, -1)`` and ``mask.expand(n, -1)``.
    """
    if "labels" in settings:
        raise TypeError("text_ddim_sample takes no labels: the captions (context, mask) are the condition.")
    B = context.shape[0]
    shape = (B, model.config.in_channels, *model.config.latent_size)
    return ddim_sample(CaptionConditioned(model, context, mask), schedule, shape, labels=torch.arange(B),
                       guidance_scale=guidance_scale, progress=progress, **settings)


__all__ = [
    "TextUNetConfig", "TextUNet", "CrossAttention", "TextAttention", "cross_attention_maps",
    "CaptionConditioned", "text_diffusion_loss", "text_ddim_sample",
]
