"""course_lib.attention against torch's scaled_dot_product_attention, nn.MultiheadAttention and closed forms."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention.bias import causal_lower_right

from course_lib.attention import (
    KVCache, MultiHeadAttention, Rotary, apply_rotary, causal_mask, padding_mask, scaled_dot_product_attention,
    sinusoidal_positions,
)

F64 = torch.float64


def qkv(B=2, H=3, T=5, S=5, d=8, dv=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H, T, d, generator=g, dtype=F64)
    k = torch.randn(B, H, S, d, generator=g, dtype=F64)
    v = torch.randn(B, H, S, dv or d, generator=g, dtype=F64)
    return q, k, v


def test_attention_equals_torch_sdpa_without_mask_and_causal():
    q, k, v = qkv()
    assert torch.allclose(scaled_dot_product_attention(q, k, v), F.scaled_dot_product_attention(q, k, v), atol=1e-12)
    ours = scaled_dot_product_attention(q, k, v, causal=True)
    assert torch.allclose(ours, F.scaled_dot_product_attention(q, k, v, is_causal=True), atol=1e-12)
    assert not torch.allclose(ours, scaled_dot_product_attention(q, k, v), atol=1e-3)  # the mask matters


def test_attention_cross_shapes_and_value_dim():
    q, k, v = qkv(T=4, S=7, d=8, dv=5)
    out, w = scaled_dot_product_attention(q, k, v, return_weights=True)
    assert out.shape == (2, 3, 4, 5) and w.shape == (2, 3, 4, 7)
    assert torch.allclose(out, F.scaled_dot_product_attention(q, k, v), atol=1e-12)
    assert torch.allclose(w.sum(-1), torch.ones(2, 3, 4, dtype=F64), atol=1e-12)


def test_causal_mask_lower_right_matches_torch_for_a_kv_cache():
    q, k, v = qkv(T=3, S=7)
    assert torch.equal(causal_mask(4), torch.tril(torch.ones(4, 4, dtype=torch.bool)))
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=causal_lower_right(3, 7))
    assert torch.allclose(scaled_dot_product_attention(q, k, v, causal=True), ref, atol=1e-12)
    # the last query (position 6) sees all 7 keys, the first (position 4) sees 5
    assert causal_mask(3, 7).sum(-1).tolist() == [5, 6, 7]
    with pytest.raises(ValueError, match="at least as many keys"):
        causal_mask(5, 3)


def test_padding_mask_equals_dropping_the_padded_keys():
    lengths = torch.tensor([5, 3])
    tokens = torch.tensor([[4, 5, 6, 7, 8], [4, 5, 6, 0, 0]])
    mask = padding_mask(tokens, pad_id=0)
    assert mask.shape == (2, 1, 1, 5) and mask.dtype == torch.bool
    assert torch.equal(mask, padding_mask(lengths, max_len=5))
    q, k, v = qkv(T=4, S=5)
    ours, w = scaled_dot_product_attention(q, k, v, mask=mask, return_weights=True)
    assert torch.allclose(ours, F.scaled_dot_product_attention(q, k, v, attn_mask=mask), atol=1e-12)
    # sentence 1 has 3 real keys: the same as attention over those 3 keys only
    assert torch.allclose(ours[1], F.scaled_dot_product_attention(q[1], k[1, :, :3], v[1, :, :3]), atol=1e-12)
    assert torch.all(w[1, ..., 3:] == 0)
    with pytest.raises(ValueError, match="pad_id"):
        padding_mask(tokens)


def test_float_mask_is_added_to_the_scores():
    q, k, v = qkv(T=4, S=6)
    bias = torch.randn(1, 1, 4, 6, dtype=F64)
    assert torch.allclose(scaled_dot_product_attention(q, k, v, mask=bias),
                          F.scaled_dot_product_attention(q, k, v, attn_mask=bias), atol=1e-12)


def test_attention_rejects_mismatched_shapes():
    q, k, v = qkv()
    with pytest.raises(ValueError, match="expects q"):
        scaled_dot_product_attention(q, k[..., :4], v)


def copy_into_torch_mha(ours: MultiHeadAttention, kdim=None) -> nn.MultiheadAttention:
    d = ours.d_model
    ref = nn.MultiheadAttention(d, ours.n_head, batch_first=True, kdim=kdim, vdim=kdim, dtype=F64)
    with torch.no_grad():
        if ours.fused:
            ref.in_proj_weight.copy_(ours.qkv.weight)
            ref.in_proj_bias.copy_(ours.qkv.bias)
        else:
            for name, proj in (("q", ours.q_proj), ("k", ours.k_proj), ("v", ours.v_proj)):
                if kdim is None:
                    ref.in_proj_weight[{"q": 0, "k": 1, "v": 2}[name] * d:][:d].copy_(proj.weight)
                else:
                    getattr(ref, f"{name}_proj_weight").copy_(proj.weight)
            ref.in_proj_bias.copy_(torch.cat([ours.q_proj.bias, ours.k_proj.bias, ours.v_proj.bias]))
        ref.out_proj.weight.copy_(ours.out_proj.weight)
        ref.out_proj.bias.copy_(ours.out_proj.bias)
    return ref.eval()


@pytest.mark.parametrize("fused", [True, False])
def test_self_attention_equals_torch_multihead_attention(fused):
    torch.manual_seed(0)
    ours = MultiHeadAttention(12, 3, fused=fused).to(F64).eval()
    ref = copy_into_torch_mha(ours)
    x = torch.randn(2, 6, 12, dtype=F64)
    tokens = torch.tensor([[5, 5, 5, 5, 5, 5], [5, 5, 5, 5, 0, 0]])
    # torch: key_padding_mask True = ignore, attn_mask True = not allowed (the opposite of ours)
    y_ref, w_ref = ref(x, x, x, key_padding_mask=tokens == 0, average_attn_weights=False)
    y, w = ours(x, mask=padding_mask(tokens, pad_id=0), return_weights=True)
    assert torch.allclose(y, y_ref, atol=1e-12) and torch.allclose(w, w_ref, atol=1e-12)
    y_ref, _ = ref(x, x, x, attn_mask=~causal_mask(6))
    assert torch.allclose(ours(x, causal=True), y_ref, atol=1e-12)  # torch's fused kernel path
    assert torch.allclose(ours(x, causal=True, return_weights=True)[0], y_ref, atol=1e-12)  # explicit path


def test_cross_attention_equals_torch_multihead_attention():
    torch.manual_seed(1)
    ours = MultiHeadAttention(8, 2, cross=True, d_context=6).to(F64).eval()
    ref = copy_into_torch_mha(ours, kdim=6)
    x, memory = torch.randn(3, 4, 8, dtype=F64), torch.randn(3, 7, 6, dtype=F64)
    lengths = torch.tensor([7, 2, 5])
    y_ref, w_ref = ref(x, memory, memory, key_padding_mask=~padding_mask(lengths, max_len=7)[:, 0, 0],
                       average_attn_weights=False)
    y, w = ours(x, memory, mask=padding_mask(lengths, max_len=7), return_weights=True)
    assert y.shape == (3, 4, 8) and w.shape == (3, 2, 4, 7)
    assert torch.allclose(y, y_ref, atol=1e-12) and torch.allclose(w, w_ref, atol=1e-12)


def test_kv_cache_incremental_equals_full_causal_attention():
    torch.manual_seed(2)
    mha = MultiHeadAttention(16, 4, rotary=Rotary(4, 32)).to(F64).eval()
    x = torch.randn(2, 9, 16, dtype=F64)
    full = mha(x, causal=True)
    cache = KVCache()
    pieces = [mha(x[:, :4], causal=True, cache=cache)]  # a prompt of 4, then a chunk of 2, then one at a time
    pieces.append(mha(x[:, 4:6], causal=True, cache=cache))
    pieces += [mha(x[:, t:t + 1], causal=True, cache=cache) for t in range(6, 9)]
    assert len(cache) == 9
    assert torch.allclose(torch.cat(pieces, dim=1), full, atol=1e-12)


def test_cross_attention_cache_projects_the_memory_once():
    torch.manual_seed(3)
    mha = MultiHeadAttention(8, 2, cross=True).to(F64).eval()
    x, memory = torch.randn(2, 5, 8, dtype=F64), torch.randn(2, 6, 8, dtype=F64)
    full = mha(x, memory)
    cache = KVCache()
    steps = [mha(x[:, t:t + 1], memory if t == 0 else None, cache=cache) for t in range(5)]
    assert len(cache) == 6  # the memory's 6 positions, not 5 steps
    assert torch.allclose(torch.cat(steps, dim=1), full, atol=1e-12)


def test_multihead_attention_errors():
    with pytest.raises(ValueError, match="divisible"):
        MultiHeadAttention(10, 3)
    mha = MultiHeadAttention(8, 2)
    with pytest.raises(ValueError, match=r"\(B, T, 8\)"):
        mha(torch.randn(2, 5, 6))
    with pytest.raises(ValueError, match="context"):
        MultiHeadAttention(8, 2, cross=True)(torch.randn(1, 2, 8))


def test_sinusoidal_positions_match_the_formula():
    T, d = 11, 6
    pe = sinusoidal_positions(T, d, dtype=F64)
    for pos in range(T):
        for i in range(d // 2):
            angle = pos / 10000 ** (2 * i / d)
            assert math.isclose(pe[pos, 2 * i].item(), math.sin(angle), abs_tol=1e-12)
            assert math.isclose(pe[pos, 2 * i + 1].item(), math.cos(angle), abs_tol=1e-12)
    assert sinusoidal_positions(4, 5).shape == (4, 5)  # odd widths work too


def test_rotary_scores_depend_only_on_the_position_difference():
    g = torch.Generator().manual_seed(4)
    q, k = torch.randn(1, 16, generator=g, dtype=F64), torch.randn(1, 16, generator=g, dtype=F64)

    def score(m, n):
        return (apply_rotary(q, torch.tensor([m])) * apply_rotary(k, torch.tensor([n]))).sum().item()

    for m, n in [(3, 1), (10, 2), (0, 7)]:
        for shift in (1, 5, 100):
            assert math.isclose(score(m, n), score(m + shift, n + shift), abs_tol=1e-10)
    assert not math.isclose(score(3, 1), score(3, 2), abs_tol=1e-3)  # a different offset scores differently
    assert math.isclose(score(0, 0), (q * k).sum().item(), abs_tol=1e-12)  # position 0 is no rotation


def test_rotary_preserves_norms_and_the_cached_tables_agree():
    x = torch.randn(2, 3, 10, 8, dtype=F64)
    positions = torch.arange(5, 15)
    rotated = apply_rotary(x, positions)
    assert torch.allclose(rotated.norm(dim=-1), x.norm(dim=-1), atol=1e-12)
    assert not torch.allclose(rotated, x, atol=1e-3)
    rope = Rotary(8, max_len=32).to(F64)
    assert torch.allclose(rope(x, positions), rotated, atol=1e-6)  # tables stored in float32
    with pytest.raises(ValueError, match="even"):
        apply_rotary(torch.randn(2, 5), torch.arange(2))
    with pytest.raises(ValueError, match="beyond"):
        rope(x, torch.arange(30, 40))
