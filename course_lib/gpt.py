"""A GPT: a decoder-only Transformer language model, GPT-2 compatible (in the spirit of nanoGPT).

GPT-2 (Radford et al., 2019): token + learned position embeddings, n_layer pre-norm blocks of causal
self-attention and a 4C GELU MLP, a final LayerNorm and a read-out tied to the token embeddings. The
model, its loss in nats per token, the KV cache and the sampling rules (top-p: Holtzman et al., 2020)
are derived in notebook 10.

Layer names follow GPT-2 (``ln_1``, ``attn``, ``ln_2``, ``mlp.c_fc``, ``mlp.c_proj``, ``ln_f``), and
``to_hf_gpt2(model)`` copies the weights into transformers' ``GPT2LMHeadModel`` (built from a
config, nothing downloaded) whose logits then equal ours. ``GPTConfig(pos_emb="rotary")`` swaps
learned positions for RoPE (``course_lib.attention.Rotary``; no GPT-2 export then).

Usage::

    config = GPTConfig(vocab_size=65, block_size=128, n_layer=4, n_head=4, n_embd=128)
    model = GPT(config)
    logits, loss = model(x, y)                    # x, y: (B, T) token ids, y = x shifted by one
    model.eval()
    out = model.generate(prompt, max_new_tokens=200, temperature=0.8, top_k=20)   # (B, T0 + 200)
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .attention import KVCache, MultiHeadAttention, Rotary
from .checks import check_tokens
from .train import count_parameters

POS_EMBEDDINGS = ("learned", "rotary", "none")
ACTIVATIONS = {"gelu_tanh": "gelu_new", "gelu": "gelu"}  # ours -> the name in transformers' GPT2Config


@dataclass
class GPTConfig:
    vocab_size: int = 65  # number of distinct tokens (65 characters in Tiny Shakespeare)
    block_size: int = 256  # longest context the model can read (learned position table size)
    n_layer: int = 4  # Transformer blocks
    n_head: int = 4  # attention heads per block
    n_embd: int = 128  # width C of the residual stream
    dropout: float = 0.0  # on embeddings, attention weights and residual branches (training only)
    bias: bool = True  # biases in Linear and LayerNorm layers (GPT-2 has them)
    pos_emb: str = "learned"  # "learned" (GPT-2), "rotary" (RoPE in attention) or "none"
    activation: str = "gelu_tanh"  # GPT-2's tanh approximation of GELU, or "gelu" (exact, erf; faster on CPU)

    def __post_init__(self) -> None:
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd={self.n_embd} must be divisible by n_head={self.n_head}.")
        if self.pos_emb not in POS_EMBEDDINGS:
            raise ValueError(f"pos_emb must be one of {POS_EMBEDDINGS}, got {self.pos_emb!r}.")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {tuple(ACTIVATIONS)}, got {self.activation!r}.")


class MLP(nn.Module):
    """Position-wise feed-forward network: C -> 4C -> GELU -> C (GPT-2's tanh GELU by default)."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU(approximate="tanh" if config.activation == "gelu_tanh" else "none")
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(self.gelu(self.c_fc(x)))  # (B, T, C) -> (B, T, 4C) -> (B, T, C)


class Block(nn.Module):
    """Pre-norm Transformer block: x + attn(LN(x)), then x + mlp(LN(x))."""

    def __init__(self, config: GPTConfig, rotary: Rotary | None = None):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = MultiHeadAttention(config.n_embd, config.n_head, fused=True, bias=config.bias,
                                       dropout=config.dropout, rotary=rotary)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        x = x + self.drop(self.attn(self.ln_1(x), causal=True, cache=cache))  # (B, T, C)
        x = x + self.drop(self.mlp(self.ln_2(x)))  # (B, T, C)
        return x


def init_gpt2_weights(model: nn.Module, n_layer: int, std: float = 0.02) -> None:
    """GPT-2's initialization: Linear and Embedding weights ~ N(0, std^2), Linear biases 0, and the
    projections into the residual stream (``out_proj``, ``mlp.c_proj``) ~ N(0, (std / sqrt(2 n_layer))^2)."""
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=std)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
    for name, p in model.named_parameters():
        if name.endswith("attn.out_proj.weight") or name.endswith("mlp.c_proj.weight"):
            nn.init.normal_(p, mean=0.0, std=std / math.sqrt(2 * n_layer))


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)  # token embeddings
        self.wpe = nn.Embedding(config.block_size, config.n_embd) if config.pos_emb == "learned" else None
        rotary = Rotary(config.n_embd // config.n_head, config.block_size) if config.pos_emb == "rotary" else None
        self.drop = nn.Dropout(config.dropout)
        self.h = nn.ModuleList([Block(config, rotary) for _ in range(config.n_layer)])
        self.ln_f = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight  # weight tying: one matrix embeds and un-embeds tokens
        init_gpt2_weights(self, config.n_layer)

    def new_cache(self) -> list[KVCache]:
        """An empty KV cache, one ``KVCache`` per block, for ``forward(..., cache=...)``."""
        return [KVCache() for _ in self.h]

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None,
                cache: list[KVCache] | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """idx (B, T) token ids -> logits (B, T, vocab) and the mean cross-entropy (nats) against ``targets``
        (B, T) (entries -1 are ignored), or None without targets.

        With ``cache`` (from ``new_cache()``), idx holds the tokens *after* those already in the
        cache: their positions continue from ``len(cache[0])``, and the cache grows by T.
        """
        check_tokens(idx, "GPT's idx")
        B, T = idx.shape
        past = 0 if cache is None else len(cache[0])
        if past + T > self.config.block_size:
            raise ValueError(f"Sequence of length {past + T} is longer than block_size={self.config.block_size}; "
                             f"crop the context to the last {self.config.block_size} tokens (idx[:, -block_size:]).")
        x = self.wte(idx)  # (B, T, C)
        if self.wpe is not None:
            x = x + self.wpe(torch.arange(past, past + T, device=idx.device))  # (T, C) broadcast over B
        x = self.drop(x)
        for i, block in enumerate(self.h):
            x = block(x, cache=None if cache is None else cache[i])  # (B, T, C)
        logits = self.lm_head(self.ln_f(x))  # (B, T, vocab)
        loss = None
        if targets is not None:
            if targets.shape != idx.shape:
                raise ValueError(f"targets must have the shape of idx {tuple(idx.shape)}, got {tuple(targets.shape)}.")
            loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-1)
        return logits, loss

    @torch.no_grad()
    def generate(self, idx: torch.Tensor, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None,
                 top_p: float | None = None, greedy: bool = False, use_cache: bool = True,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """Continue idx (B, T0) by ``max_new_tokens`` sampled tokens: returns (B, T0 + max_new_tokens).

        Call ``model.eval()`` first (dropout would make every step random). With ``use_cache`` the prompt
        is run once, then each step feeds only the newest token. Past block_size tokens the model reads the
        last block_size, recomputed each step (the cache is dropped): the result is the same with and without cache.
        """
        if idx.dim() != 2:
            raise ValueError(f"generate expects a prompt of token ids (B, T0), got shape {tuple(idx.shape)}; "
                             f"for one prompt use idx[None].")
        block = self.config.block_size
        cache = self.new_cache() if use_cache else None
        out = idx
        for _ in range(max_new_tokens):
            if out.size(1) > block:
                cache = None  # the window slides from here on: recompute it every step
            if cache is None:
                logits, _ = self(out[:, -block:])  # (B, T, vocab), the whole (cropped) context
            elif len(cache[0]) == 0:
                logits, _ = self(out, cache=cache)  # the prompt, filling the cache
            else:
                logits, _ = self(out[:, -1:], cache=cache)  # only the newest token: (B, 1, vocab)
            next_id = sample_next(logits[:, -1, :], temperature, top_k, top_p, greedy=greedy, generator=generator)
            out = torch.cat([out, next_id], dim=1)  # (B, T + 1)
        return out

    def num_params(self, non_embedding: bool = False) -> int:
        """Number of parameters, tied weights counted once; ``non_embedding`` excludes the position table."""
        n = count_parameters(self)
        if non_embedding and self.wpe is not None:
            n -= self.wpe.weight.numel()
        return n

    def estimate_flops_per_token(self, seq_len: int | None = None) -> int:
        """Training FLOPs per token, 6 N + 12 n_layer C T (Chowdhery et al., 2022, PaLM appendix B; nanoGPT).

        N: the parameters without the position table (the tied token matrix counts: it computes the logits);
        T = seq_len, block_size by default. Derived in notebook 10.
        """
        c = self.config
        T = c.block_size if seq_len is None else seq_len
        return 6 * self.num_params(non_embedding=True) + 12 * c.n_layer * c.n_embd * T


# ---------------------------------------------------------------------------------------
# Sampling
# ---------------------------------------------------------------------------------------

def filter_logits(logits: torch.Tensor, top_k: int | None = None, top_p: float | None = None) -> torch.Tensor:
    """Set the logits of tokens outside the top-k and / or the top-p nucleus to -inf: (..., V) -> (..., V).

    top-k keeps exactly k logits (ties broken by position). top-p keeps the smallest set of most likely
    tokens whose probability mass is >= p (always at least one).
    """
    if top_k is not None:
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}.")
        k = min(top_k, logits.size(-1))
        keep = torch.zeros_like(logits, dtype=torch.bool).scatter(-1, logits.topk(k, dim=-1).indices, True)
        logits = logits.masked_fill(~keep, float("-inf"))
    if top_p is not None:
        if not 0.0 < top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {top_p}.")
        sorted_logits, order = logits.sort(dim=-1, descending=True)  # (..., V)
        probs = sorted_logits.softmax(dim=-1)
        mass_before = probs.cumsum(dim=-1) - probs  # probability of the tokens ranked above each one
        drop_sorted = mass_before >= top_p  # the nucleus was complete before this token
        drop = drop_sorted.scatter(-1, order, drop_sorted)  # back to vocabulary order
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def sample_next(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
                greedy: bool = False, generator: torch.Generator | None = None) -> torch.Tensor:
    """Choose the next token from last-position logits (B, V): returns token ids (B, 1).

    ``greedy=True`` or ``temperature=0``: the argmax. Otherwise sample from
    softmax(filter_logits(logits / temperature, top_k, top_p)).
    """
    if logits.dim() != 2:
        raise ValueError(f"sample_next expects the last position's logits (B, V), got shape {tuple(logits.shape)}.")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}.")
    if greedy or temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)  # (B, 1)
    logits = filter_logits(logits / temperature, top_k, top_p)
    probs = torch.softmax(logits, dim=-1)  # (B, V)
    return torch.multinomial(probs, num_samples=1, generator=generator)  # (B, 1)


# ---------------------------------------------------------------------------------------
# Export to transformers' GPT-2
# ---------------------------------------------------------------------------------------

def to_hf_gpt2(model: GPT):
    """A transformers ``GPT2LMHeadModel`` with this model's weights (from a ``GPT2Config``, no download).

    GPT-2's ``Conv1D`` weights are (in, out), the transpose of ``nn.Linear``'s. With ``bias=False`` GPT-2's
    biases are set to zero. Returns the model in eval mode, on ``model``'s device and dtype.
    """
    from transformers import GPT2Config, GPT2LMHeadModel

    c = model.config
    if c.pos_emb != "learned":
        raise ValueError(f"GPT-2 uses learned positions; a model with pos_emb={c.pos_emb!r} cannot be exported.")
    hf_config = GPT2Config(vocab_size=c.vocab_size, n_positions=c.block_size, n_embd=c.n_embd, n_layer=c.n_layer,
                           n_head=c.n_head, n_inner=4 * c.n_embd, activation_function=ACTIVATIONS[c.activation],
                           resid_pdrop=c.dropout, embd_pdrop=c.dropout, attn_pdrop=c.dropout,
                           layer_norm_epsilon=model.ln_f.eps, tie_word_embeddings=True,
                           bos_token_id=c.vocab_size - 1, eos_token_id=c.vocab_size - 1)
    p = next(model.parameters())
    hf = GPT2LMHeadModel(hf_config).to(device=p.device, dtype=p.dtype)

    def copy(dst_w, dst_b, src: nn.Module, transpose: bool) -> None:
        dst_w.copy_(src.weight.t() if transpose else src.weight)
        if dst_b is not None:
            dst_b.copy_(src.bias if src.bias is not None else torch.zeros_like(dst_b))

    with torch.no_grad():
        t = hf.transformer
        t.wte.weight.copy_(model.wte.weight)
        t.wpe.weight.copy_(model.wpe.weight)
        for ours, theirs in zip(model.h, t.h):
            copy(theirs.ln_1.weight, theirs.ln_1.bias, ours.ln_1, transpose=False)
            copy(theirs.attn.c_attn.weight, theirs.attn.c_attn.bias, ours.attn.qkv, transpose=True)
            copy(theirs.attn.c_proj.weight, theirs.attn.c_proj.bias, ours.attn.out_proj, transpose=True)
            copy(theirs.ln_2.weight, theirs.ln_2.bias, ours.ln_2, transpose=False)
            copy(theirs.mlp.c_fc.weight, theirs.mlp.c_fc.bias, ours.mlp.c_fc, transpose=True)
            copy(theirs.mlp.c_proj.weight, theirs.mlp.c_proj.bias, ours.mlp.c_proj, transpose=True)
        copy(t.ln_f.weight, t.ln_f.bias, model.ln_f, transpose=False)
        hf.lm_head.weight.copy_(model.lm_head.weight)  # tied to wte in both models
    return hf.eval()
