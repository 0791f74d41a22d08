"""course_lib.gpt: causality, KV cache, sampling, and parity with transformers' GPT-2 (built from a config)."""
import math

import pytest
import torch

from course_lib.gpt import GPT, GPTConfig, filter_logits, sample_next, to_hf_gpt2

F64 = torch.float64


def tiny_gpt(seed=0, **overrides):
    torch.manual_seed(seed)
    kwargs = dict(vocab_size=13, block_size=16, n_layer=2, n_head=2, n_embd=16) | overrides
    model = GPT(GPTConfig(**kwargs)).to(F64).eval()
    with torch.no_grad():  # LayerNorm gains and biases away from (1, 0), so every weight is exercised
        for name, p in model.named_parameters():
            if name.endswith("bias") or "ln" in name:
                p.add_(0.1 * torch.randn_like(p))
    return model


def tokens(B, T, vocab=13, seed=0):
    return torch.randint(0, vocab, (B, T), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("pos_emb", ["learned", "rotary", "none"])
def test_changing_a_future_token_leaves_earlier_logits_unchanged(pos_emb):
    model = tiny_gpt(pos_emb=pos_emb)
    x = tokens(2, 12)
    logits, _ = model(x)
    for t in (0, 5, 11):
        x2 = x.clone()
        x2[:, t] = (x2[:, t] + 1) % 13
        logits2, _ = model(x2)
        assert torch.allclose(logits2[:, :t], logits[:, :t], atol=1e-12)
        assert not torch.allclose(logits2[:, t], logits[:, t], atol=1e-6)  # position t itself does change


@pytest.mark.parametrize("pos_emb", ["learned", "rotary"])
def test_cached_logits_equal_full_forward(pos_emb):
    model = tiny_gpt(pos_emb=pos_emb)
    x = tokens(3, 16)
    full, _ = model(x)
    cache = model.new_cache()
    chunks = [model(x[:, :5], cache=cache)[0], model(x[:, 5:7], cache=cache)[0]]
    chunks += [model(x[:, t:t + 1], cache=cache)[0] for t in range(7, 16)]
    assert torch.allclose(torch.cat(chunks, dim=1), full, atol=1e-12)
    with pytest.raises(ValueError, match="longer than block_size"):
        model(x[:, :1], cache=cache)  # the cache is full


@pytest.mark.parametrize("pos_emb", ["learned", "rotary"])
def test_cached_generation_equals_uncached(pos_emb):
    model = tiny_gpt(pos_emb=pos_emb)
    prompt = tokens(2, 3)
    # greedy, and beyond block_size (the window slides after 16 tokens)
    a = model.generate(prompt, 25, greedy=True)
    b = model.generate(prompt, 25, greedy=True, use_cache=False)
    assert a.shape == (2, 28) and torch.equal(a, b) and torch.equal(a[:, :3], prompt)
    # sampling with the same seed
    kw = dict(temperature=1.3, top_k=8, top_p=0.95)
    a = model.generate(prompt, 12, generator=torch.Generator().manual_seed(7), **kw)
    b = model.generate(prompt, 12, generator=torch.Generator().manual_seed(7), use_cache=False, **kw)
    c = model.generate(prompt, 12, generator=torch.Generator().manual_seed(8), **kw)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_greedy_generation_follows_the_argmax_of_the_full_forward():
    model = tiny_gpt(seed=1)
    out = model.generate(tokens(2, 4), 8, greedy=True)
    logits, _ = model(out)
    assert torch.equal(out[:, 4:], logits[:, 3:-1].argmax(-1))


@pytest.mark.parametrize("bias, activation", [(True, "gelu_tanh"), (False, "gelu")])
def test_logits_and_loss_equal_transformers_gpt2(bias, activation):
    model = tiny_gpt(seed=2, bias=bias, activation=activation)
    hf = to_hf_gpt2(model)
    x = tokens(3, 16, seed=3)
    with torch.no_grad():
        out = hf(input_ids=x, labels=x)  # GPT-2 shifts the labels itself
        logits, _ = model(x)
        _, loss = model(x[:, :-1], x[:, 1:])
    assert out.logits.dtype == F64
    assert torch.allclose(out.logits, logits, atol=1e-10)
    assert math.isclose(out.loss.item(), loss.item(), abs_tol=1e-6)  # transformers returns the loss in float32
    with pytest.raises(ValueError, match="learned positions"):
        to_hf_gpt2(tiny_gpt(pos_emb="rotary"))


def test_loss_is_cross_entropy_and_ignores_minus_one():
    model = tiny_gpt()
    x, y = tokens(2, 6), tokens(2, 6, seed=1)
    logits, loss = model(x, y)
    manual = -torch.log_softmax(logits, -1).gather(-1, y[..., None]).mean()
    assert math.isclose(loss.item(), manual.item(), abs_tol=1e-12)
    y[:, 3:] = -1
    _, loss = model(x, y)
    manual = -torch.log_softmax(logits[:, :3], -1).gather(-1, y[:, :3, None]).mean()
    assert math.isclose(loss.item(), manual.item(), abs_tol=1e-12)


def test_parameter_count_and_flops_match_the_gpt2_formulas():
    V, T, L, C = 13, 16, 3, 24
    model = GPT(GPTConfig(vocab_size=V, block_size=T, n_layer=L, n_head=4, n_embd=C))
    # per block: qkv 3C^2 + 3C, out C^2 + C, mlp 8C^2 + 5C, two LayerNorms 4C; final LayerNorm 2C
    expected = V * C + T * C + L * (12 * C * C + 13 * C) + 2 * C
    assert model.num_params() == expected
    assert model.num_params(non_embedding=True) == expected - T * C
    assert model.estimate_flops_per_token() == 6 * (expected - T * C) + 12 * L * C * T
    assert model.lm_head.weight is model.wte.weight


def test_gpt2_initialization_scales_the_residual_projections():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=50, block_size=32, n_layer=8, n_head=4, n_embd=128))
    std = torch.cat([b.attn.qkv.weight.flatten() for b in model.h]).std().item()
    proj = torch.cat([b.mlp.c_proj.weight.flatten() for b in model.h]).std().item()
    assert abs(std - 0.02) < 0.001
    assert abs(proj - 0.02 / math.sqrt(16)) < 0.0005
    assert all(torch.all(b.attn.qkv.bias == 0) for b in model.h)


def test_top_k_keeps_exactly_k_candidates():
    logits = torch.tensor([[1.0, 3.0, 2.0, 3.0, -1.0, 0.5]])
    kept = torch.isfinite(filter_logits(logits, top_k=3))
    assert kept.sum() == 3 and kept[0, [1, 2, 3]].all()
    kept = torch.isfinite(filter_logits(logits, top_k=2))  # a tie at the top: still exactly two
    assert kept.sum() == 2 and kept[0, [1, 3]].all()
    g = torch.Generator().manual_seed(0)
    draws = torch.cat([sample_next(logits, top_k=3, generator=g) for _ in range(300)])
    assert set(draws.flatten().tolist()) == {1, 2, 3}


def test_top_p_keeps_the_smallest_set_with_enough_mass():
    probs = torch.tensor([[0.05, 0.4, 0.1, 0.25, 0.2]])  # sorted: 0.4, 0.25, 0.2, 0.1, 0.05
    logits = probs.log()
    for p, expected in [(0.3, {1}), (0.39, {1}), (0.41, {1, 3}), (0.7, {1, 3, 4}),
                        (0.9, {1, 3, 4, 2}), (0.97, {0, 1, 2, 3, 4})]:
        kept = torch.isfinite(filter_logits(logits, top_p=p))[0].nonzero().flatten().tolist()
        assert set(kept) == expected, (p, kept)
        assert probs[0, kept].sum() >= p - 1e-6  # enough mass, and no smaller set has it (checked by hand above)


def kept_by_loop(logits, top_k=None, top_p=None):
    """Which tokens survive top-k and then top-p, deciding token by token from the most likely down (V,)."""
    keep = torch.ones_like(logits, dtype=torch.bool)
    order = logits.argsort(descending=True, stable=True)
    if top_k is not None:
        keep[order[top_k:]] = False
    if top_p is not None:
        probs = logits.masked_fill(~keep, float("-inf")).softmax(-1)
        mass = 0.0
        for i in order.tolist():
            if not keep[i]:
                continue
            if mass >= top_p:  # the nucleus is complete: drop the rest
                keep[i] = False
            mass += probs[i].item()
    return keep


def test_filter_logits_keeps_the_tokens_of_a_token_by_token_loop_on_random_distributions():
    """The vectorized filter (sort, cumulative mass, scatter back) against the loop it replaces: 200 random
    logit vectors of a 65-character vocabulary (notebook 10's), each with a random k and p, alone and combined."""
    V = 65
    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        z = torch.randn(V, generator=g, dtype=F64) * 3
        k = int(torch.randint(1, V + 1, (1,), generator=g))
        p = float(torch.rand(1, generator=g)) * 0.99 + 0.01
        for kw in [dict(top_k=k), dict(top_p=p), dict(top_k=k, top_p=p)]:
            assert torch.equal(filter_logits(z, **kw).isfinite(), kept_by_loop(z, **kw)), kw


def test_temperature_towards_zero_is_greedy_and_one_is_the_softmax():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(64, 10, generator=g)
    greedy = logits.argmax(-1, keepdim=True)
    assert torch.equal(sample_next(logits, temperature=0.0), greedy)
    assert torch.equal(sample_next(logits, greedy=True, temperature=5.0), greedy)
    assert torch.equal(sample_next(logits, temperature=1e-3, generator=g), greedy)
    # temperature 1: frequencies follow softmax(logits)
    row = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    n = 20000
    draws = sample_next(row.expand(n, -1), generator=g)[:, 0]
    freq = torch.bincount(draws, minlength=4) / n
    p = torch.softmax(row[0], -1)
    assert torch.all((freq - p).abs() < 4 * torch.sqrt(p * (1 - p) / n))
    with pytest.raises(ValueError, match="temperature"):
        sample_next(row, temperature=-1.0)
    with pytest.raises(ValueError, match="top_p"):
        sample_next(row, top_p=0.0)


def test_clear_errors_for_bad_inputs():
    model = tiny_gpt()
    with pytest.raises(ValueError, match="longer than block_size=16"):
        model(tokens(1, 17))
    with pytest.raises(ValueError, match=r"\(B, T\)"):
        model(tokens(1, 5)[0])
    with pytest.raises(ValueError, match="integer dtype"):
        model(torch.zeros(1, 5))
    with pytest.raises(ValueError, match="idx\\[None\\]"):
        model.generate(tokens(1, 5)[0], 3)
    with pytest.raises(ValueError, match="divisible"):
        GPTConfig(n_embd=10, n_head=3)
    with pytest.raises(ValueError, match="activation"):
        GPTConfig(activation="relu")


def test_a_tiny_gpt_learns_a_repeating_pattern():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=5, block_size=12, n_layer=1, n_head=2, n_embd=32))
    pattern = torch.tensor([0, 1, 2, 3, 4, 2, 1]).repeat(4)  # period 7: needs more than the last token
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(80):
        starts = torch.randint(0, len(pattern) - 13, (8,))
        x = torch.stack([pattern[s:s + 12] for s in starts])
        y = torch.stack([pattern[s + 1:s + 13] for s in starts])
        _, loss = model(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    out = model.generate(pattern[None, :7], 14, greedy=True)
    assert torch.equal(out[0], pattern[:21]), out
