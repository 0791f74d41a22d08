"""Attention from scratch: scaled dot-product attention, masks, multi-head attention, positions.

Scaled dot-product attention (Vaswani et al., 2017), multi-head attention and the three kinds of
positions are derived in notebook 09.

Masks follow ``torch.nn.functional.scaled_dot_product_attention``: a **boolean mask with True =
may attend** (False = masked out), broadcastable to (B, H, T, S); a float mask is *added* to the
scores (0 = attend, -inf = masked). Careful: ``torch.nn.MultiheadAttention``'s ``key_padding_mask``
uses the opposite convention (True = ignore this key).

A query row whose keys are all masked comes out as NaN in ``scaled_dot_product_attention`` here (and in
``MultiHeadAttention`` with ``return_weights=True``); torch's fused kernel, ``MultiHeadAttention``'s default
path, returns 0 for it. Padding masks mask keys only, so this happens only for a sequence of all padding.

Positions: ``sinusoidal_positions`` (Vaswani et al., 2017; the default of ``course_lib.seq2seq``),
learned absolute (``nn.Embedding`` in ``course_lib.gpt``, as in GPT-2), and rotary, RoPE (Su et al.,
2021): ``apply_rotary`` and ``Rotary``, used by ``GPTConfig(pos_emb="rotary")``.

Usage::

    out = scaled_dot_product_attention(q, k, v, causal=True)                 # (B, H, T, d)
    out, w = scaled_dot_product_attention(q, k, v, mask=padding_mask(src, pad_id=0),
                                          return_weights=True)               # w: (B, H, T, S)
    mha = MultiHeadAttention(d_model=128, n_head=4)
    y = mha(x, causal=True)                                                   # (B, T, 128)
    cross = MultiHeadAttention(d_model=128, n_head=4, cross=True)
    y, w = cross(x, context=memory, mask=padding_mask(src, pad_id=0), return_weights=True)

``MultiHeadAttention`` uses torch's fused kernel unless attention weights are asked for;
``scaled_dot_product_attention`` here is the readable reference, and the tests check that both agree.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


# ---------------------------------------------------------------------------------------
# Scaled dot-product attention and masks
# ---------------------------------------------------------------------------------------

def causal_mask(T: int, S: int | None = None, device: torch.device | str | None = None) -> torch.Tensor:
    """Boolean (T, S) causal mask, True = may attend; the T queries are the last T of the S positions.

    With S > T (a KV cache) ``mask[i, j] = j <= S - T + i``: aligned "lower-right", whereas torch's
    ``is_causal=True`` aligns upper-left when T != S.
    """
    S = T if S is None else S
    if S < T:
        raise ValueError(f"causal_mask needs at least as many keys as queries, got T={T} queries and S={S} keys.")
    return torch.ones(T, S, dtype=torch.bool, device=device).tril(diagonal=S - T)  # (T, S)


def padding_mask(x: torch.Tensor, pad_id: int | None = None, max_len: int | None = None) -> torch.Tensor:
    """Boolean key mask (B, 1, 1, S), True = a real token (attend), False = padding.

    * ``padding_mask(tokens, pad_id=0)``: tokens (B, S) int, padding wherever ``tokens == pad_id``;
    * ``padding_mask(lengths, max_len=S)``: lengths (B,) int, the first ``lengths[b]`` positions are real.
    """
    if x.dim() == 2:
        if pad_id is None:
            raise ValueError("padding_mask(tokens) needs pad_id, the id of the padding token.")
        keep = x != pad_id  # (B, S)
    elif x.dim() == 1:
        if max_len is None:
            raise ValueError("padding_mask(lengths) needs max_len, the padded length S.")
        keep = torch.arange(max_len, device=x.device)[None, :] < x[:, None]  # (B, S)
    else:
        raise ValueError(f"padding_mask expects token ids (B, S) or lengths (B,), got shape {tuple(x.shape)}.")
    return keep[:, None, None, :]  # (B, 1, 1, S)


def scaled_dot_product_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                                 mask: torch.Tensor | None = None, causal: bool = False,
                                 dropout_p: float = 0.0, return_weights: bool = False,
                                 generator: torch.Generator | None = None):
    """softmax(q k^T / sqrt(d) + mask) v: q (..., T, d), k (..., S, d), v (..., S, d_v) -> (..., T, d_v).

    ``mask``: boolean (True = attend) or float (added), broadcastable to (..., T, S). ``causal=True`` also
    applies ``causal_mask(T, S)``. ``dropout_p`` drops attention weights, with random numbers from
    ``generator``; the caller passes 0 in eval mode. ``return_weights=True`` returns ``(out, weights)``,
    weights (..., T, S).
    """
    if q.size(-1) != k.size(-1) or k.size(-2) != v.size(-2):
        raise ValueError(f"Attention expects q (..., T, d), k (..., S, d), v (..., S, d_v); "
                         f"got q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}.")
    T, S, d = q.size(-2), k.size(-2), q.size(-1)
    scores = q @ k.transpose(-2, -1) / math.sqrt(d)  # (..., T, S)
    if causal:
        scores = scores.masked_fill(~causal_mask(T, S, device=q.device), float("-inf"))
    if mask is not None:
        if mask.dtype == torch.bool:
            scores = scores.masked_fill(~mask, float("-inf"))  # False = masked out
        else:
            scores = scores + mask  # float mask: 0 = attend, -inf = masked out
    weights = torch.softmax(scores, dim=-1)  # (..., T, S), rows sum to 1
    if dropout_p > 0.0:
        keep = torch.rand(weights.shape, generator=generator, device=weights.device) >= dropout_p
        weights = weights * keep / (1.0 - dropout_p)
    out = weights @ v  # (..., T, d_v)
    return (out, weights) if return_weights else out


# ---------------------------------------------------------------------------------------
# Positional information
# ---------------------------------------------------------------------------------------

def sinusoidal_positions(T: int, d: int, base: float = 10000.0, dtype: torch.dtype = torch.float32,
                         device: torch.device | str | None = None) -> torch.Tensor:
    """Fixed sinusoidal position encodings (T, d), added to token embeddings; computed in float64, then cast.

    PE[pos, 2i] = sin(pos / base^(2i / d)),   PE[pos, 2i + 1] = cos(pos / base^(2i / d))
    """
    pos = torch.arange(T, dtype=torch.float64, device=device)[:, None]  # (T, 1)
    inv_freq = base ** (-torch.arange(0, d, 2, dtype=torch.float64, device=device) / d)  # (ceil(d/2),)
    angles = pos * inv_freq  # (T, ceil(d/2))
    pe = torch.zeros(T, d, dtype=torch.float64, device=device)
    pe[:, 0::2] = torch.sin(angles)
    pe[:, 1::2] = torch.cos(angles[:, : d // 2])
    return pe.to(dtype)  # (T, d)


def rotary_tables(positions: torch.Tensor, dim: int, base: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of the rotary angles, each (T, dim), for integer ``positions`` (T,), in float64.

    Dimensions i and i + dim/2 share the angle pos * base^(-2i / dim) ("rotate half" layout of GPT-NeoX
    and LLaMA).
    """
    if dim % 2:
        raise ValueError(f"Rotary embeddings rotate pairs of dimensions: the head size must be even, got {dim}.")
    theta = base ** (-torch.arange(0, dim, 2, dtype=torch.float64, device=positions.device) / dim)  # (dim/2,)
    angles = positions.to(torch.float64)[:, None] * theta[None, :]  # (T, dim/2)
    angles = torch.cat([angles, angles], dim=-1)  # (T, dim): pair (i, i + dim/2) shares an angle
    return angles.cos(), angles.sin()


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate each pair (x_i, x_{i+dim/2}) by its angle: x (..., T, dim), cos, sin (T, dim) -> x's shape."""
    x1, x2 = x.chunk(2, dim=-1)  # (..., T, dim/2) each
    rotated_half = torch.cat([-x2, x1], dim=-1)  # (..., T, dim)
    return x * cos.to(x.dtype) + rotated_half * sin.to(x.dtype)


def apply_rotary(x: torch.Tensor, positions: torch.Tensor, base: float = 10000.0) -> torch.Tensor:
    """Rotary position embedding (RoPE) of queries or keys (never values): x (..., T, dim), positions (T,)."""
    if positions.dim() != 1 or positions.numel() != x.size(-2):
        raise ValueError(f"apply_rotary expects positions (T,) with T = x.size(-2) = {x.size(-2)}, "
                         f"got shape {tuple(positions.shape)}.")
    cos, sin = rotary_tables(positions, x.size(-1), base)
    return rotate(x, cos, sin)


class Rotary(nn.Module):
    """RoPE with cos / sin tables computed once for positions 0 .. max_len - 1 (used by course_lib.gpt)."""

    def __init__(self, head_dim: int, max_len: int, base: float = 10000.0):
        super().__init__()
        cos, sin = rotary_tables(torch.arange(max_len), head_dim, base)  # (max_len, head_dim) each
        self.register_buffer("cos", cos.float(), persistent=False)
        self.register_buffer("sin", sin.float(), persistent=False)

    def forward(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """x (..., T, head_dim), positions (T,) -> x rotated, the same as ``apply_rotary(x, positions)``."""
        if int(positions.max()) >= self.cos.size(0):
            raise ValueError(f"Position {int(positions.max())} is beyond the rotary table "
                             f"({self.cos.size(0)} positions).")
        return rotate(x, self.cos[positions], self.sin[positions])


# ---------------------------------------------------------------------------------------
# Multi-head attention with an optional KV cache
# ---------------------------------------------------------------------------------------

class KVCache:
    """Keys and values (B, H, t, d_head) one attention layer has computed so far, for incremental decoding.

    Self-attention appends the new positions on each call; cross-attention stores the encoder's keys and
    values on the first call and reuses them. ``reorder(index)`` keeps batch rows ``index`` (beam search).
    """

    def __init__(self) -> None:
        self.k: torch.Tensor | None = None  # (B, H, t, d_head)
        self.v: torch.Tensor | None = None  # (B, H, t, d_head)

    def __len__(self) -> int:
        return 0 if self.k is None else self.k.size(-2)

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Add positions (B, H, t_new, d_head) and return all keys and values so far."""
        self.k = k if self.k is None else torch.cat([self.k, k], dim=-2)
        self.v = v if self.v is None else torch.cat([self.v, v], dim=-2)
        return self.k, self.v

    def reorder(self, index: torch.Tensor) -> None:
        if self.k is not None:
            self.k, self.v = self.k.index_select(0, index), self.v.index_select(0, index)


class MultiHeadAttention(nn.Module):
    """Multi-head self- or cross-attention: (B, T, d_model) -> (B, T, d_model).

    * Self-attention (``cross=False``): q, k, v from x; ``fused=True`` uses one ``qkv`` Linear(d_model,
      3 d_model), q, k, v side by side (the GPT-2 layout); ``fused=False`` ``q_proj``, ``k_proj``, ``v_proj``.
    * Cross-attention (``cross=True``): q from x, k and v from ``context`` (B, S, d_context), separate
      projections.
    * ``rotary``: applied to q and k of self-attention; positions continue after the cache's length.
    * ``forward(..., cache=KVCache())`` decodes incrementally; ``return_weights=True`` also returns the
      weights (B, H, T, S) and runs the reference attention instead of torch's fused kernel.

    Dropout applies in training mode only.
    """

    def __init__(self, d_model: int, n_head: int, *, cross: bool = False, d_context: int | None = None,
                 fused: bool = True, bias: bool = True, dropout: float = 0.0, rotary: Rotary | None = None):
        super().__init__()
        if d_model % n_head:
            raise ValueError(f"d_model={d_model} must be divisible by n_head={n_head}.")
        if rotary is not None and cross:
            raise ValueError("Rotary positions are for self-attention; "
                             "cross-attention keys come from another sequence.")
        self.d_model, self.n_head, self.d_head = d_model, n_head, d_model // n_head
        self.cross, self.dropout, self.rotary = cross, dropout, rotary
        d_context = d_context or d_model
        self.fused = fused and not cross
        if self.fused:
            self.qkv = nn.Linear(d_model, 3 * d_model, bias=bias)
        else:
            self.q_proj = nn.Linear(d_model, d_model, bias=bias)
            self.k_proj = nn.Linear(d_context if cross else d_model, d_model, bias=bias)
            self.v_proj = nn.Linear(d_context if cross else d_model, d_model, bias=bias)
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        return x.view(B, T, self.n_head, self.d_head).transpose(1, 2)  # (B, T, C) -> (B, H, T, d_head)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None, *, mask: torch.Tensor | None = None,
                causal: bool = False, cache: KVCache | None = None, return_weights: bool = False):
        if x.dim() != 3 or x.size(-1) != self.d_model:
            raise ValueError(f"MultiHeadAttention expects x of shape (B, T, {self.d_model}), got {tuple(x.shape)}.")
        if self.cross and context is None and (cache is None or cache.k is None):
            raise ValueError("Cross-attention needs context=(B, S, d_context), e.g. the encoder output.")
        B, T, C = x.shape
        past = 0 if (cache is None or self.cross) else len(cache)  # positions already in the cache
        if self.fused:
            q, k, v = self.qkv(x).split(C, dim=-1)  # (B, T, C) each
            q, k, v = self._heads(q), self._heads(k), self._heads(v)  # (B, H, T, d_head) each
        else:
            q = self._heads(self.q_proj(x))  # (B, H, T, d_head)
            if self.cross and cache is not None and cache.k is not None:
                k = v = None  # the encoder's keys and values are in the cache already
            else:
                src = context if self.cross else x
                k, v = self._heads(self.k_proj(src)), self._heads(self.v_proj(src))  # (B, H, S, d_head)
        if self.rotary is not None:
            positions = torch.arange(past, past + T, device=x.device)  # (T,)
            q, k = self.rotary(q, positions), self.rotary(k, positions)
        if cache is not None:
            if not self.cross:
                k, v = cache.append(k, v)  # (B, H, past + T, d_head)
            elif cache.k is None:
                cache.append(k, v)
            else:
                k, v = cache.k, cache.v
        S = k.size(-2)

        # causal masking: lower-right aligned when the cache holds earlier positions
        is_causal = causal and not self.cross and T > 1
        if is_causal and (past > 0 or mask is not None or return_weights):
            cm = causal_mask(T, S, device=x.device)  # (T, S)
            if mask is None:
                mask = cm
            elif mask.dtype == torch.bool:
                mask = mask & cm  # (B or 1, 1, T, S)
            else:
                mask = mask + torch.zeros(T, S, dtype=mask.dtype, device=x.device).masked_fill(~cm, float("-inf"))
            is_causal = False
        p = self.dropout if self.training else 0.0
        if return_weights:
            y, weights = scaled_dot_product_attention(q, k, v, mask=mask, dropout_p=p, return_weights=True)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p, is_causal=is_causal)
        y = y.transpose(1, 2).reshape(B, T, C)  # (B, H, T, d_head) -> (B, T, C): heads side by side
        y = self.out_proj(y)  # (B, T, C)
        return (y, weights) if return_weights else y
