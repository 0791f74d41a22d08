"""A small UNet that predicts the noise in a noisy image: eps_theta(x_t, t, label); notebook 07 explains it.

It maps x_t (B, C, H, W), an integer step t (B,) and, optionally, a class label (B,) to a tensor of
x_t's shape. H and W must be divisible by 2 ** (len(channel_mults) - 1), i.e. by 4 for three levels.
The layout, for the default config on 28x28 MNIST (base channels c = 32, ``channel_mults = (1, 2, 2)``)::

    x (B, 1, 28, 28) -> stem conv -> (B, c, 28, 28)
    down:   ResBlock c  @28  --skip-->                       up: ResBlock [c + c]   -> c   @28
            downsample 28 -> 14                                   upsample 14 -> 28
            ResBlock 2c @14  --skip-->                           ResBlock [2c + 2c] -> 2c  @14
            downsample 14 -> 7                                   upsample 7 -> 14
            ResBlock 2c @7 + attention  --skip-->                ResBlock [2c + 2c] -> 2c @7 + attention
    middle: ResBlock, attention, ResBlock @7
    out: GroupNorm, SiLU, conv -> (B, 1, 28, 28)

Every ResBlock adds a linear map of the time embedding (sinusoidal features of t -> MLP, size 4c). With
``num_classes = K`` a label embedding with K + 1 rows is added to it; row K is the null label ("no class"),
used for the unconditional prediction of classifier-free guidance (``course_lib.diffusion.guided_eps``).

Usage::

    model = UNet(UNetConfig(base_channels=32, num_classes=10))
    eps_hat = model(x_t, t, labels)          # (B, 1, 28, 28), t: (B,) int64 in [0, T)
    eps_uncond = model(x_t, t)                # labels=None -> the null label
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .checks import check_image_batch, check_labels, check_timesteps


@dataclass
class UNetConfig:
    in_channels: int = 1  # image channels (1 for MNIST and for a log-mel spectrogram)
    base_channels: int = 32  # channels at full resolution; level i has base_channels * channel_mults[i]
    channel_mults: tuple[int, ...] = (1, 2, 2)  # one entry per resolution: 28, 14, 7 for MNIST
    blocks_per_level: int = 1  # ResBlocks per level on the way down (as many on the way up)
    attention: bool = True  # self-attention at the lowest resolution (and in the middle)
    attention_heads: int = 4  # heads of that attention; channels there must be divisible by it
    num_classes: int | None = None  # K for a class-conditional model (label K is the null label)
    dropout: float = 0.0  # dropout inside ResBlocks
    groups: int = 8  # GroupNorm groups; every channel count must be divisible by it

    @property
    def time_dim(self) -> int:
        return 4 * self.base_channels  # size of the time (and class) embedding vector

    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.channel_mults) - 1)  # H and W must be divisible by this


def sinusoidal_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """Sinusoidal features of the step t: (B,) -> (B, dim) = [sin(t w_i), cos(t w_i)], i = 0 .. dim/2 - 1,
    w_i = max_period ** (-i / (dim / 2)): frequencies from 1 down to 1/max_period."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None, :]  # (B, half)
    return torch.cat([torch.sin(args), torch.cos(args)], dim=1)  # (B, dim)


class ResBlock(nn.Module):
    """Two 3x3 convs with GroupNorm + SiLU, the embedding added in between, and a residual path."""

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, groups: int, dropout: float = 0.0):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb = nn.Linear(emb_dim, out_ch)  # embedding -> one shift per channel
        self.norm2 = nn.GroupNorm(groups, out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))  # (B, out, H, W)
        h = h + self.emb(F.silu(emb))[:, :, None, None]  # (B, out, H, W) + (B, out, 1, 1)
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))  # (B, out, H, W)
        return self.skip(x) + h  # (B, out, H, W)


class SelfAttention(nn.Module):
    """Multi-head self-attention over the H*W positions of a feature map, with a residual path."""

    def __init__(self, channels: int, heads: int, groups: int):
        super().__init__()
        if channels % heads:
            raise ValueError(f"SelfAttention: {channels} channels are not divisible by {heads} heads.")
        self.heads = heads
        self.norm = nn.GroupNorm(groups, channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)  # a linear map per position
        self.proj = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        qkv = self.qkv(self.norm(x))  # (B, 3C, H, W)
        qkv = qkv.reshape(B, 3, self.heads, C // self.heads, H * W).transpose(-1, -2)  # (B, 3, h, HW, d)
        q, k, v = qkv.unbind(1)  # each (B, h, HW, d)
        out = F.scaled_dot_product_attention(q, k, v)  # softmax(q k^T / sqrt(d)) v: (B, h, HW, d)
        out = out.transpose(-1, -2).reshape(B, C, H, W)  # (B, C, H, W)
        return x + self.proj(out)


class Downsample(nn.Module):
    """Halve H and W with a stride-2 3x3 conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)  # (B, C, H/2, W/2)


class Upsample(nn.Module):
    """Double H and W, or resize to ``size`` (odd sizes: 4 -> 7): nearest-neighbour, then a 3x3 conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        if size is None:
            return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))  # (B, C, 2H, 2W)
        return self.conv(F.interpolate(x, size=tuple(size), mode="nearest"))  # (B, C, *size)


class Level(nn.Module):
    """The ResBlocks (each optionally followed by attention) of one resolution, and the resampling after them."""

    def __init__(self, blocks: list[ResBlock], attns: list[nn.Module], resample: nn.Module):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.attns = nn.ModuleList(attns)  # SelfAttention or Identity, one per block
        self.resample = resample  # Downsample, Upsample or Identity


class UNet(nn.Module):
    def __init__(self, config: UNetConfig | None = None):
        super().__init__()
        self.config = cfg = config or UNetConfig()
        chans = [cfg.base_channels * m for m in cfg.channel_mults]  # channels per level, e.g. [32, 64, 64]
        for ch in [cfg.base_channels, *chans]:
            if ch % cfg.groups:
                raise ValueError(f"UNetConfig: {ch} channels are not divisible by groups={cfg.groups}.")
        n_levels, d = len(chans), cfg.time_dim

        def attention(level: int) -> nn.Module:  # attention only at the lowest resolution
            if cfg.attention and level == n_levels - 1:
                return SelfAttention(chans[level], cfg.attention_heads, cfg.groups)
            return nn.Identity()

        # t -> sinusoidal features -> MLP; labels -> embedding, added to it
        self.time_mlp = nn.Sequential(nn.Linear(cfg.base_channels, d), nn.SiLU(), nn.Linear(d, d))
        self.label_emb = nn.Embedding(cfg.num_classes + 1, d) if cfg.num_classes is not None else None

        self.stem = nn.Conv2d(cfg.in_channels, cfg.base_channels, 3, padding=1)
        self.down = nn.ModuleList()
        ch = cfg.base_channels
        for i, out in enumerate(chans):
            blocks = []
            for _ in range(cfg.blocks_per_level):
                blocks.append(ResBlock(ch, out, d, cfg.groups, cfg.dropout))
                ch = out
            resample = Downsample(ch) if i < n_levels - 1 else nn.Identity()
            self.down.append(Level(blocks, [attention(i) for _ in blocks], resample))

        self.mid1 = ResBlock(ch, ch, d, cfg.groups, cfg.dropout)
        self.mid_attn = attention(n_levels - 1)
        self.mid2 = ResBlock(ch, ch, d, cfg.groups, cfg.dropout)

        self.up = nn.ModuleList()  # from the lowest resolution back to the full one
        for i in reversed(range(n_levels)):
            blocks = []
            for _ in range(cfg.blocks_per_level):
                blocks.append(ResBlock(ch + chans[i], chans[i], d, cfg.groups, cfg.dropout))  # [h, skip] -> out
                ch = chans[i]
            resample = Upsample(ch) if i > 0 else nn.Identity()
            self.up.append(Level(blocks, [attention(i) for _ in blocks], resample))

        self.out_norm = nn.GroupNorm(cfg.groups, ch)
        self.out_conv = nn.Conv2d(ch, cfg.in_channels, 3, padding=1)

    @property
    def null_label(self) -> int | None:
        """The label index meaning "no class" (= num_classes), or None for an unconditional model."""
        return self.config.num_classes

    def forward(self, x: torch.Tensor, t: torch.Tensor | int, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Predicted noise eps_theta(x_t, t, labels): (B, C, H, W) -> (B, C, H, W).

        ``t``: (B,) integer steps (or one int for the whole batch); ``labels``: (B,) ints in
        [0, num_classes], where num_classes is the null label; None means the null label.
        """
        t, labels = self._check_inputs(x, t, labels)
        emb = self.time_mlp(sinusoidal_embedding(t, self.config.base_channels))  # (B, d)
        if self.label_emb is not None:
            emb = emb + self.label_emb(labels)  # (B, d)

        h = self.stem(x)  # (B, c, H, W)
        skips = []
        for level in self.down:
            for block, attn in zip(level.blocks, level.attns):
                h = attn(block(h, emb))  # (B, c_i, H_i, W_i)
                skips.append(h)
            h = level.resample(h)  # (B, c_i, H_i / 2, W_i / 2), except at the lowest level

        h = self.mid2(self.mid_attn(self.mid1(h, emb)), emb)  # (B, c_low, H_low, W_low)

        for level in self.up:
            for block, attn in zip(level.blocks, level.attns):
                h = attn(block(torch.cat([h, skips.pop()], dim=1), emb))  # (B, c_i, H_i, W_i)
            h = level.resample(h)  # (B, c_i, 2 H_i, 2 W_i), except at full resolution
        return self.out_conv(F.silu(self.out_norm(h)))  # (B, C, H, W)

    def _check_inputs(self, x, t, labels) -> tuple[torch.Tensor, torch.Tensor | None]:
        cfg = self.config
        check_image_batch(x, "UNet", (cfg.in_channels, "H", "W"), cfg.downsample_factor)
        B = x.shape[0]
        t = check_timesteps(t, B, "UNet", x.device)
        if cfg.num_classes is None:
            if labels is not None:
                raise ValueError("This UNet is unconditional (num_classes=None) but labels were given.")
            return t, None
        if labels is None:
            return t, torch.full((B,), cfg.num_classes, device=x.device, dtype=torch.long)  # the null label
        # Reading label values is free on the CPU; on a GPU it would wait for the GPU at every step, so the
        # samplers check GPU labels once, before their loop (check_labels below).
        labels = torch.as_tensor(labels, device=x.device)
        return t, check_labels(labels, B, self._labels_name, cfg.num_classes + 1, values=labels.device.type == "cpu")

    def check_labels(self, labels: torch.Tensor) -> None:
        """Raise unless every label lies in [0, num_classes] (num_classes = the null label). Reading the
        result waits for the GPU, so loops call it once, not at every step."""
        check_labels(labels, len(labels), self._labels_name, self.config.num_classes + 1)

    @property
    def _labels_name(self) -> str:
        return f"UNet labels ({self.config.num_classes} = the null label)"


__all__ = ["UNetConfig", "UNet", "sinusoidal_embedding", "ResBlock", "SelfAttention", "Downsample", "Upsample"]
