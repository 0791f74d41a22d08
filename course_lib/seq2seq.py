"""An encoder-decoder Transformer for translation, with greedy and beam-search decoding.

The encoder-decoder Transformer of Vaswani et al. (2017), but pre-norm (the original is post-norm) and with
GELU feed-forward layers; both stacks end in a LayerNorm.
Teacher forcing, greedy and beam search and the cross-attention ablations are explained in notebook 11.
Token ids: ``pad_id`` (masked in attention, ignored by the loss), ``bos_id`` starts every target and
``eos_id`` ends it, the same ids in both vocabularies; decoding never generates padding or BOS.

Usage::

    tgt_in, tgt_out = tgt[:, :-1], tgt[:, 1:]              # tgt = [BOS, y_1, .., y_n, EOS, PAD, ..]
    loss = seq2seq_loss(model(src, tgt_in), tgt_out, pad_id=config.pad_id, label_smoothing=0.1)
    model.eval()
    hyps = beam_search(model, src, beam_size=4, length_penalty=0.6)   # or greedy_decode(model, src)
    logits, attn = model(src, tgt_in, return_attention=True)
    attn["cross"][layer]                                   # (B, H, T, S): target step t looks at source s
    maps = cross_attention_maps(model, src, hyps.tokens)   # the same for a decoding result

Ablations: ``Seq2SeqConfig(pool_source=True)`` hands the decoder only the mean of the encoder outputs
over the real source tokens, one (B, 1, d) vector; ``cross_attention=False`` removes the encoder and
cross-attention, leaving a language model of target sentences.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .attention import KVCache, MultiHeadAttention, padding_mask, sinusoidal_positions
from .checks import check_tokens
from .train import count_parameters


@dataclass
class Seq2SeqConfig:
    src_vocab_size: int  # source tokens, including the special ones
    tgt_vocab_size: int  # target tokens, including the special ones
    d_model: int = 256  # width of both stacks
    n_head: int = 4
    n_enc_layer: int = 3
    n_dec_layer: int = 3
    d_ff: int | None = None  # hidden units of the MLPs; None = 4 * d_model
    dropout: float = 0.1
    max_len: int = 128  # longest source or target sequence (position table size)
    pos_emb: str = "sinusoidal"  # "sinusoidal" (fixed) or "learned"
    cross_attention: bool = True  # False: the decoder never sees the source (ablation)
    pool_source: bool = False  # True: the decoder sees only the mean-pooled encoder output (ablation)
    tie_embeddings: bool = True  # the output layer reuses the target embedding matrix
    pad_id: int = 0  # the same ids in source and target vocabularies
    bos_id: int = 1
    eos_id: int = 2

    def __post_init__(self) -> None:
        if self.d_model % self.n_head:
            raise ValueError(f"d_model={self.d_model} must be divisible by n_head={self.n_head}.")
        if self.pos_emb not in ("sinusoidal", "learned"):
            raise ValueError(f"pos_emb must be 'sinusoidal' or 'learned', got {self.pos_emb!r}.")
        if self.pool_source and not self.cross_attention:
            raise ValueError("pool_source=True needs cross_attention=True "
                             "(the pooled vector is read by cross-attention).")


class FeedForward(nn.Module):
    def __init__(self, d_model: int, d_ff: int, dropout: float):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(d_model, d_ff), nn.Linear(d_ff, d_model)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.drop(F.gelu(self.fc1(x))))  # (B, T, d) -> (B, T, d_ff) -> (B, T, d)


class EncoderBlock(nn.Module):
    """x + self_attn(LN(x)) (padding keys masked), then x + mlp(LN(x))."""

    def __init__(self, c: Seq2SeqConfig):
        super().__init__()
        self.ln_1, self.ln_2 = nn.LayerNorm(c.d_model), nn.LayerNorm(c.d_model)
        self.attn = MultiHeadAttention(c.d_model, c.n_head, dropout=c.dropout)
        self.mlp = FeedForward(c.d_model, c.d_ff or 4 * c.d_model, c.dropout)
        self.drop = nn.Dropout(c.dropout)

    def forward(self, x, src_mask, return_weights=False):
        h = self.attn(self.ln_1(x), mask=src_mask, return_weights=return_weights)
        h, w = h if return_weights else (h, None)
        x = x + self.drop(h)  # (B, S, d)
        x = x + self.drop(self.mlp(self.ln_2(x)))
        return x, w


class DecoderBlock(nn.Module):
    """x + causal_self_attn(LN(x)), then x + cross_attn(LN(x), memory) (if enabled), then x + mlp(LN(x))."""

    def __init__(self, c: Seq2SeqConfig):
        super().__init__()
        self.ln_1, self.ln_3 = nn.LayerNorm(c.d_model), nn.LayerNorm(c.d_model)
        self.self_attn = MultiHeadAttention(c.d_model, c.n_head, dropout=c.dropout)
        if c.cross_attention:
            self.ln_2 = nn.LayerNorm(c.d_model)
            self.cross_attn = MultiHeadAttention(c.d_model, c.n_head, cross=True, dropout=c.dropout)
        self.mlp = FeedForward(c.d_model, c.d_ff or 4 * c.d_model, c.dropout)
        self.drop = nn.Dropout(c.dropout)
        self.has_cross = c.cross_attention

    def forward(self, x, memory, src_mask, self_cache=None, cross_cache=None, return_weights=False):
        h = self.self_attn(self.ln_1(x), causal=True, cache=self_cache, return_weights=return_weights)
        h, w_self = h if return_weights else (h, None)
        x = x + self.drop(h)  # (B, T, d)
        w_cross = None
        if self.has_cross:
            h = self.cross_attn(self.ln_2(x), memory, mask=src_mask, cache=cross_cache, return_weights=return_weights)
            h, w_cross = h if return_weights else (h, None)
            x = x + self.drop(h)  # (B, T, d)
        x = x + self.drop(self.mlp(self.ln_3(x)))
        return x, w_self, w_cross


class DecoderCache:
    """One self-attention and one cross-attention (encoder keys and values) ``KVCache`` per decoder layer."""

    def __init__(self, n_layer: int):
        self.self_attn = [KVCache() for _ in range(n_layer)]
        self.cross_attn = [KVCache() for _ in range(n_layer)]

    def __len__(self) -> int:
        return len(self.self_attn[0])

    def reorder(self, index: torch.Tensor) -> None:
        for c in self.self_attn + self.cross_attn:
            c.reorder(index)


class Seq2SeqTransformer(nn.Module):
    def __init__(self, config: Seq2SeqConfig):
        super().__init__()
        self.config = c = config
        self.scale = math.sqrt(c.d_model)  # token embeddings ~ N(0, 1/d) times sqrt(d): unit variance
        if c.cross_attention:
            self.src_emb = nn.Embedding(c.src_vocab_size, c.d_model, padding_idx=c.pad_id)
            self.encoder = nn.ModuleList([EncoderBlock(c) for _ in range(c.n_enc_layer)])
            self.ln_enc = nn.LayerNorm(c.d_model)
        self.tgt_emb = nn.Embedding(c.tgt_vocab_size, c.d_model, padding_idx=c.pad_id)
        self.decoder = nn.ModuleList([DecoderBlock(c) for _ in range(c.n_dec_layer)])
        self.ln_dec = nn.LayerNorm(c.d_model)
        self.out = nn.Linear(c.d_model, c.tgt_vocab_size, bias=False)
        if c.pos_emb == "learned":
            self.pos = nn.Embedding(c.max_len, c.d_model)
        else:
            self.register_buffer("pe", sinusoidal_positions(c.max_len, c.d_model), persistent=False)
        self.drop = nn.Dropout(c.dropout)
        self._init_weights()
        if c.tie_embeddings:
            self.out.weight = self.tgt_emb.weight

    def _init_weights(self) -> None:
        """The original Transformer's scales: token embeddings ~ N(0, 1/d) (times sqrt(d) in ``_embed``,
        so unit variance like the sinusoids), padding rows 0, Linear weights Xavier-uniform, biases 0."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, std=self.config.d_model ** -0.5)
                if module.padding_idx is not None:
                    with torch.no_grad():
                        module.weight[module.padding_idx].zero_()

    def _embed(self, emb: nn.Embedding, tokens: torch.Tensor, start: int = 0) -> torch.Tensor:
        B, T = tokens.shape
        if start + T > self.config.max_len:
            raise ValueError(f"Sequence of length {start + T} is longer than max_len={self.config.max_len}; "
                             f"truncate it or build the model with a larger max_len.")
        positions = torch.arange(start, start + T, device=tokens.device)  # (T,)
        pos = self.pos(positions) if self.config.pos_emb == "learned" else self.pe[positions]  # (T, d)
        return self.drop(emb(tokens) * self.scale + pos)  # (B, T, d)

    def encode(self, src: torch.Tensor, return_attention: bool = False):
        """src (B, S) -> memory (B, S, d) and the source key mask (B, 1, 1, S) (True = real token).

        With ``pool_source`` memory is the mean over real tokens, (B, 1, d), and the mask (B, 1, 1, 1).
        Without cross-attention there is no encoder: returns (None, None). With ``return_attention``
        also the encoder's self-attention weights, one (B, H, S, S) per layer.
        """
        check_tokens(src, "src", "length")
        if not self.config.cross_attention:
            return (None, None, []) if return_attention else (None, None)
        src_mask = padding_mask(src, pad_id=self.config.pad_id)  # (B, 1, 1, S)
        x = self._embed(self.src_emb, src)  # (B, S, d)
        weights = []
        for block in self.encoder:
            x, w = block(x, src_mask, return_weights=return_attention)
            weights.append(w)
        memory = self.ln_enc(x)  # (B, S, d)
        if self.config.pool_source:
            keep = src_mask[:, 0, 0, :, None].to(memory.dtype)  # (B, S, 1): 1 = real token
            memory = (memory * keep).sum(1, keepdim=True) / keep.sum(1, keepdim=True)  # (B, 1, d)
            src_mask = torch.ones_like(src_mask[..., :1])  # (B, 1, 1, 1)
        return (memory, src_mask, weights) if return_attention else (memory, src_mask)

    def decode(self, tgt_in: torch.Tensor, memory: torch.Tensor | None, src_mask: torch.Tensor | None,
               cache: DecoderCache | None = None, return_attention: bool = False):
        """tgt_in (B, T) -> logits (B, T, V_tgt). With ``cache`` (from ``new_cache()``) tgt_in holds only the
        new positions. ``return_attention`` also returns {"decoder_self": [...], "cross": [...]}."""
        check_tokens(tgt_in, "tgt_in", "length")
        start = 0 if cache is None else len(cache)
        x = self._embed(self.tgt_emb, tgt_in, start)  # (B, T, d)
        w_self, w_cross = [], []
        for i, block in enumerate(self.decoder):
            x, ws, wc = block(x, memory, src_mask, None if cache is None else cache.self_attn[i],
                              None if cache is None else cache.cross_attn[i], return_weights=return_attention)
            w_self.append(ws)
            w_cross.append(wc)
        logits = self.out(self.ln_dec(x))  # (B, T, V_tgt)
        return (logits, {"decoder_self": w_self, "cross": w_cross}) if return_attention else logits

    def forward(self, src: torch.Tensor, tgt_in: torch.Tensor, return_attention: bool = False):
        """Teacher forcing: src (B, S), tgt_in (B, T) -> logits (B, T, V_tgt) for the next target tokens.

        With ``return_attention``: (logits, {"encoder": [...], "decoder_self": [...], "cross": [...]}),
        lists of per-layer weights (B, H, queries, keys) (``cross`` holds None without cross-attention).
        """
        check_tokens(src, "src", "length")
        check_tokens(tgt_in, "tgt_in", "length")
        if src.size(0) != tgt_in.size(0):
            raise ValueError(f"src and tgt_in must have the same batch size, got {src.size(0)} and {tgt_in.size(0)}.")
        if not return_attention:
            return self.decode(tgt_in, *self.encode(src))
        memory, src_mask, w_enc = self.encode(src, return_attention=True)
        logits, weights = self.decode(tgt_in, memory, src_mask, return_attention=True)
        return logits, {"encoder": w_enc, **weights}

    def new_cache(self) -> DecoderCache:
        return DecoderCache(len(self.decoder))

    def num_params(self) -> int:
        return count_parameters(self)


def seq2seq_loss(logits: torch.Tensor, targets: torch.Tensor, pad_id: int,
                 label_smoothing: float = 0.0) -> torch.Tensor:
    """Mean cross-entropy over non-padding targets: logits (B, T, V), targets (B, T) -> scalar (nats/token).

    ``label_smoothing`` eps puts eps / V on every token and 1 - eps on the true one (Szegedy et al., 2016).
    """
    if logits.shape[:2] != targets.shape:
        raise ValueError("logits (B, T, V) and targets (B, T) disagree: "
                         f"{tuple(logits.shape)} vs {tuple(targets.shape)}.")
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=pad_id,
                           label_smoothing=label_smoothing)


# ---------------------------------------------------------------------------------------
# Decoding
# ---------------------------------------------------------------------------------------

@torch.no_grad()
def cross_attention_maps(model: Seq2SeqTransformer, src: torch.Tensor, tokens: torch.Tensor) -> list[torch.Tensor]:
    """Cross-attention weights behind decoded ``tokens`` (B, L) (e.g. ``Hypotheses.tokens``): one (B, H, L, S)
    per layer, row t = where the decoder looked when it chose token t.

    A teacher-forced pass on [BOS] + tokens[:-1] gives exactly the weights of step-by-step decoding.
    """
    if not model.config.cross_attention:
        raise ValueError("This model has no cross-attention (Seq2SeqConfig(cross_attention=False)).")
    bos = torch.full_like(tokens[:, :1], model.config.bos_id)
    _, attn = model(src, torch.cat([bos, tokens[:, :-1]], dim=1), return_attention=True)
    return attn["cross"]


class Hypotheses(NamedTuple):
    tokens: torch.Tensor  # (B, L) generated tokens (EOS included when produced), padded with pad_id
    scores: torch.Tensor  # (B,) sum of log-probabilities (beam search: divided by length^length_penalty)
    lengths: torch.Tensor  # (B,) number of generated tokens, EOS included


def next_token_log_probs(model: Seq2SeqTransformer, logits: torch.Tensor) -> torch.Tensor:
    """log p(next token) from logits (..., V), with padding and BOS forbidden (they are never generated)."""
    c = model.config
    logits = logits.clone()
    logits[..., [c.pad_id, c.bos_id]] = float("-inf")
    return torch.log_softmax(logits, dim=-1)


def _pad_sequences(seqs: list[list[int]], pad_id: int, device) -> torch.Tensor:
    L = max(1, max(len(s) for s in seqs))
    out = torch.full((len(seqs), L), pad_id, dtype=torch.long, device=device)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.tensor(s, dtype=torch.long, device=device)
    return out


@torch.no_grad()
def greedy_decode(model: Seq2SeqTransformer, src: torch.Tensor, max_len: int = 50) -> Hypotheses:
    """The most likely token at every step, until EOS or ``max_len`` tokens: src (B, S) -> Hypotheses.

    Call ``model.eval()`` first.
    """
    c = model.config
    memory, src_mask = model.encode(src)
    B = src.size(0)
    cache = model.new_cache()
    tokens = torch.full((B, 1), c.bos_id, dtype=torch.long, device=src.device)  # (B, 1) = [BOS]
    scores = torch.zeros(B, dtype=model.out.weight.dtype, device=src.device)
    finished = torch.zeros(B, dtype=torch.bool, device=src.device)
    lengths = torch.zeros(B, dtype=torch.long, device=src.device)
    for _ in range(min(max_len, c.max_len)):
        logp = next_token_log_probs(model, model.decode(tokens[:, -1:], memory, src_mask, cache=cache)[:, -1])  # (B, V)
        best = logp.argmax(dim=-1)  # (B,)
        scores = scores + torch.where(finished, 0.0, logp.gather(1, best[:, None])[:, 0])
        lengths = lengths + (~finished).long()
        best = best.masked_fill(finished, c.pad_id)  # finished sentences only get padding
        finished = finished | (best == c.eos_id)
        tokens = torch.cat([tokens, best[:, None]], dim=1)  # (B, t + 1)
        if finished.all():
            break
    return Hypotheses(tokens[:, 1:], scores, lengths)


@torch.no_grad()
def beam_search(model: Seq2SeqTransformer, src: torch.Tensor, beam_size: int = 4, max_len: int = 50,
                length_penalty: float = 0.0) -> Hypotheses:
    """Beam search: src (B, S) -> the best finished hypothesis per sentence (Hypotheses).

    An EOS extension is finished if it ranks among the ``beam_size`` best candidates (so beam_size=1 is
    exactly greedy); the ``beam_size`` best others stay alive. A sentence is done with ``beam_size``
    finished hypotheses; after ``max_len`` steps the live ones count as finished (truncated). The winner
    maximises log p(y | x) / len(y)^length_penalty (0 = plain log-probability, which favours short
    outputs). Call ``model.eval()`` first.
    """
    if beam_size < 1:
        raise ValueError(f"beam_size must be >= 1, got {beam_size}.")
    c = model.config
    B, k, V, device = src.size(0), beam_size, c.tgt_vocab_size, src.device
    max_len = min(max_len, c.max_len)
    memory, src_mask = model.encode(src)
    if memory is not None:
        memory, src_mask = memory.repeat_interleave(k, dim=0), src_mask.repeat_interleave(k, dim=0)  # (B k, S, d)
    cache = model.new_cache()
    seqs = torch.full((B * k, 1), c.bos_id, dtype=torch.long, device=device)  # (B k, 1), beams of sentence b together
    scores = torch.full((B, k), float("-inf"), dtype=model.out.weight.dtype, device=device)
    scores[:, 0] = 0.0  # one live hypothesis ([BOS]) at the start; the other beams are empty
    finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(B)]  # (normalized score, tokens)
    done = [False] * B

    def normalized(score: float, length: int) -> float:
        return score / length ** length_penalty

    for t in range(1, max_len + 1):
        logp = next_token_log_probs(model, model.decode(seqs[:, -1:], memory, src_mask, cache=cache)[:, -1])
        cand = scores[:, :, None] + logp.view(B, k, V)  # (B, k, V): score of each extension
        kth_best = cand.view(B, -1).topk(k, dim=-1).values[:, -1:]  # (B, 1)
        eos_scores = cand[:, :, c.eos_id]  # (B, k)
        ends = (eos_scores >= kth_best) & torch.isfinite(eos_scores)  # EOS candidates ranked in the top k
        for b, j in ends.nonzero().tolist():
            if not done[b]:
                finished[b].append((normalized(eos_scores[b, j].item(), t), seqs[b * k + j, 1:].tolist() + [c.eos_id]))
        cand[:, :, c.eos_id] = float("-inf")
        scores, flat = cand.view(B, -1).topk(k, dim=-1)  # (B, k): the k best continuations stay alive
        parent, token = flat // V, flat % V  # (B, k) each
        index = (torch.arange(B, device=device)[:, None] * k + parent).view(-1)  # (B k,) rows to keep
        seqs = torch.cat([seqs[index], token.view(-1, 1)], dim=1)  # (B k, t + 1)
        cache.reorder(index)
        done = [d or len(f) >= k for d, f in zip(done, finished)]
        if all(done):
            break
    for b in range(B):
        if not done[b]:  # out of steps: the live hypotheses are finished as they are
            for j in range(k):
                if torch.isfinite(scores[b, j]):
                    finished[b].append((normalized(scores[b, j].item(), seqs.size(1) - 1),
                                        seqs[b * k + j, 1:].tolist()))
    best = [max(f, key=lambda h: h[0]) for f in finished]
    tokens = _pad_sequences([h[1] for h in best], c.pad_id, device)
    return Hypotheses(tokens, torch.tensor([h[0] for h in best], dtype=scores.dtype, device=device),
                      torch.tensor([len(h[1]) for h in best], device=device))
