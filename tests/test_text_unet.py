"""course_lib.text_unet: cross-attention against an explicit softmax, padding, the null caption, the adapter to
course_lib.diffusion (loss with condition dropout, DDIM with guidance) checked against hand-written loops."""
import math

import pytest
import torch

from course_lib.diffusion import NoiseSchedule, ddim_step, ddim_timesteps, diffusion_loss
from course_lib.text_unet import (
    CaptionConditioned, CrossAttention, TextUNet, TextUNetConfig, cross_attention_maps,
    text_ddim_sample, text_diffusion_loss,
)
from course_lib.train import count_parameters


def gen(seed):
    return torch.Generator().manual_seed(seed)


def small_model(seed=0, **kw):
    torch.manual_seed(seed)
    cfg = dict(base_channels=8, channel_mults=(1, 2), heads=2, groups=4, context_dim=12, context_width=8)
    cfg.update(kw)
    return TextUNet(TextUNetConfig(**cfg)).eval()


def captions(b=3, length=5, dim=12, seed=1):
    """Random caption tokens and a mask with 2, 5, 1, ... real tokens (padding at the end)."""
    g = gen(seed)
    tokens = torch.randn(b, length, dim, generator=g)
    n_real = torch.tensor([2, 5, 1, 3, 4][:b])
    mask = torch.arange(length)[None, :] < n_real[:, None]  # (B, L)
    return tokens, mask


def latents(b=3, seed=2):
    g = gen(seed)
    return torch.randn(b, 4, 7, 7, generator=g), torch.randint(0, 1000, (b,), generator=g)


# ---------------------------------------------------------------------------- cross-attention


def naive_cross_attention(layer: CrossAttention, x, context, mask):
    """softmax(Q K^T / sqrt(d)) V per head, written out, with masked keys at -inf; plus the residual."""
    B, C, H, W = x.shape
    a = layer.attn
    h, d = a.n_head, C // a.n_head
    q = a.q_proj(layer.norm(x).flatten(2).transpose(1, 2))  # (B, HW, C)
    c = layer.context_norm(context)
    k, v = a.k_proj(c), a.v_proj(c)  # (B, L, C)
    out = torch.zeros(B, H * W, C)
    weights = torch.zeros(B, h, H * W, context.shape[1])
    for b in range(B):
        for head in range(h):
            sl = slice(head * d, (head + 1) * d)
            scores = q[b, :, sl] @ k[b, :, sl].T / math.sqrt(d)  # (HW, L)
            scores[:, ~mask[b]] = -math.inf
            w = torch.softmax(scores, dim=-1)
            weights[b, head] = w
            out[b, :, sl] = w @ v[b, :, sl]
    out = a.out_proj(out)  # (B, HW, C)
    return x + out.transpose(1, 2).reshape(B, C, H, W), weights


def test_cross_attention_matches_explicit_softmax_with_mask():
    torch.manual_seed(0)
    layer = CrossAttention(channels=8, context_dim=12, heads=2, groups=4)
    x = torch.randn(3, 8, 7, 7)
    tokens, mask = captions()
    expected, expected_w = naive_cross_attention(layer, x, tokens, mask)
    assert (layer(x, tokens, mask) - expected).abs().max() < 1e-5  # the fused kernel
    layer.keep_weights = True
    assert (layer(x, tokens, mask) - expected).abs().max() < 1e-5  # the explicit path that keeps weights
    assert layer.weights.shape == (3, 2, 7, 7, 5)  # (B, heads, H, W, L)
    assert (layer.weights.flatten(2, 3) - expected_w).abs().max() < 1e-6
    assert (layer.weights[0, ..., 2:] == 0).all() and (layer.weights[2, ..., 1:] == 0).all()  # padding gets 0


def test_padding_tokens_have_no_influence():
    torch.manual_seed(0)
    layer = CrossAttention(channels=8, context_dim=12, heads=2, groups=4)
    x = torch.randn(3, 8, 7, 7)
    tokens, mask = captions()
    out = layer(x, tokens, mask)
    scrambled = torch.where(mask[:, :, None], tokens, 1e3 * torch.randn(tokens.shape))  # other padding values
    assert torch.equal(layer(x, scrambled, mask), out)
    # ...and the padded length does not matter: caption 1 (5 real tokens) alone, unpadded
    assert (layer(x[1:2], tokens[1:2], mask[1:2]) - out[1:2]).abs().max() < 1e-6
    # while a real token does matter
    changed = tokens.clone()
    changed[0, 1] += torch.randn(12)  # (a constant shift would vanish in the LayerNorm)
    assert (layer(x, changed, mask) - out)[0].abs().max() > 1e-4


def test_whole_model_ignores_padding_and_padded_length():
    model = small_model()
    z, t = latents()
    tokens, mask = captions()
    out = model(z, t, tokens, mask)
    longer = torch.cat([tokens, torch.randn(3, 4, 12)], dim=1)  # 4 more padding positions, random values
    longer_mask = torch.cat([mask, torch.zeros(3, 4, dtype=torch.bool)], dim=1)
    assert (model(z, t, longer, longer_mask) - out).abs().max() < 1e-5


# ---------------------------------------------------------------------------- the model


def test_shapes_and_dependence_on_caption_and_t():
    model = small_model()
    z, t = latents()
    tokens, mask = captions()
    out = model(z, t, tokens, mask)
    assert out.shape == (3, 4, 7, 7)
    assert (model(z, t, tokens.flip(0), mask.flip(0)) - out).abs().max() > 1e-3  # another caption
    assert (model(z, t + 1, tokens, mask) - out).abs().max() > 1e-4
    assert model(z[:2], 500).shape == (2, 4, 7, 7)  # no caption -> the null caption; an int t
    wide = small_model(in_channels=2, channel_mults=(1, 2, 2), self_attention=True)
    assert wide(torch.randn(2, 2, 9, 5), 3, tokens[:2], mask[:2]).shape == (2, 2, 9, 5)  # odd sizes, three levels


def test_examples_are_independent_of_each_other():
    model = small_model()
    z, t = latents()
    tokens, mask = captions()
    full = model(z, t, tokens, mask)
    assert (model(z[1:2], t[1:2], tokens[1:2], mask[1:2]) - full[1:2]).abs().max() < 1e-5


def test_null_caption_is_one_learned_token():
    model = small_model()
    z, t = latents()
    null_tokens, null_mask = model.null_condition(3, 5)
    assert null_mask.tolist() == [[True, False, False, False, False]] * 3
    assert torch.equal(null_tokens[:, 0], model.null_token.expand(3, -1)) and (null_tokens[:, 1:] == 0).all()
    uncond = model(z, t)
    assert (model(z, t, null_tokens, null_mask) - uncond).abs().max() < 1e-5
    with torch.no_grad():
        model.null_token.add_(torch.randn(12))  # the null caption is a parameter: changing it changes the prediction
    assert (model(z, t) - uncond).abs().max() > 1e-4


def test_gradients_reach_every_parameter():
    model = small_model().train()
    z, _ = latents()
    tokens, mask = captions()
    s = NoiseSchedule.linear(100)
    loss = text_diffusion_loss(model, s, z, tokens, mask, p_uncond=0.0, generator=gen(0))  # the captions
    loss = loss + text_diffusion_loss(model, s, z, tokens, mask, p_uncond=1.0, generator=gen(0))  # the null caption
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing, missing


def test_input_errors_say_how_to_fix():
    model = small_model()
    z, t = latents()
    tokens, mask = captions()
    with pytest.raises(ValueError, match=r"\(B, 4, h, w\)"):
        model(z[:, :3], t, tokens, mask)
    with pytest.raises(ValueError, match="context_dim=12 must match the text encoder"):
        model(z, t, torch.randn(3, 5, 384), mask)
    with pytest.raises(ValueError, match="One caption per latent"):
        model(z, t, tokens[:2], mask[:2])
    with pytest.raises(ValueError, match=r"mask must have shape \(3, 5\)"):
        model(z, t, tokens, mask[:, :4])
    with pytest.raises(ValueError, match="no real token"):
        model(z, t, tokens, torch.zeros(3, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="without a context"):
        model(z, t, None, mask)
    with pytest.raises(ValueError, match="divisible by groups=4 and heads=3"):
        TextUNet(TextUNetConfig(base_channels=8, groups=4, heads=3))


def test_cpu_profile_size_is_small():
    model = TextUNet(TextUNetConfig())  # the defaults: base 32, two levels, cross-attention only
    assert 0.3e6 < count_parameters(model) < 1.0e6


# ---------------------------------------------------------------------------- attention maps


def test_cross_attention_maps_shapes_rows_and_padding():
    model = small_model()
    z, t = latents()
    tokens, mask = captions()
    maps = cross_attention_maps(model, z, t, tokens, mask)
    assert set(maps) == {"down.0.attns.0.cross", "down.1.attns.0.cross", "mid_attn.cross",
                         "up.0.attns.0.cross", "up.1.attns.0.cross"}
    assert maps["down.0.attns.0.cross"].shape == (3, 7, 7, 5) and maps["mid_attn.cross"].shape == (3, 4, 4, 5)
    for m in maps.values():
        assert torch.allclose(m.sum(-1), torch.ones(m.shape[:-1]), atol=1e-5)
        assert (m[~mask[:, None, None, :].expand_as(m)] == 0).all()
        assert (m[2, ..., 0] == 1).all()  # caption 2 has a single real token
    # the layers go back to the fused kernel and keep nothing afterwards
    assert all(not layer.keep_weights and layer.weights is None
               for layer in model.modules() if isinstance(layer, CrossAttention))


# ---------------------------------------------------------------------------- loss and sampling through diffusion.py


def test_adapter_picks_captions_by_label_and_the_null_caption():
    model = small_model()
    z, t = latents()
    tokens, mask = captions()
    adapter = CaptionConditioned(model, tokens, mask)
    assert adapter.null_label == 3
    labels = torch.tensor([2, 3, 0])  # caption 2, the null caption, caption 0
    out = adapter(z, t, labels)
    assert (out[0] - model(z[0:1], t[0:1], tokens[2:3], mask[2:3])[0]).abs().max() < 1e-5
    assert (out[1] - model(z[1:2], t[1:2])[0]).abs().max() < 1e-5
    assert (out[2] - model(z[2:3], t[2:3], tokens[0:1], mask[0:1])[0]).abs().max() < 1e-5


def test_loss_with_full_dropout_ignores_the_captions():
    model = small_model()
    z, _ = latents()
    tokens, mask = captions()
    other, other_mask = captions(seed=5)
    s = NoiseSchedule.linear(1000)
    dropped = text_diffusion_loss(model, s, z, tokens, mask, p_uncond=1.0, generator=gen(3))
    assert dropped == text_diffusion_loss(model, s, z, other, other_mask, p_uncond=1.0, generator=gen(3))
    kept = text_diffusion_loss(model, s, z, tokens, mask, p_uncond=0.0, generator=gen(3))
    assert kept != text_diffusion_loss(model, s, z, other, other_mask, p_uncond=0.0, generator=gen(3))
    # p_uncond = 0 is diffusion_loss with the captions in order
    adapter = CaptionConditioned(model, tokens, mask)
    assert torch.allclose(kept, diffusion_loss(adapter, s, z, torch.arange(3), 0.0, gen(3)))


def test_loss_falls_when_fitting_one_batch(one_thread):
    model = small_model().train()
    z, _ = latents(b=8)
    tokens, mask = captions(b=5)
    tokens, mask = tokens.repeat(2, 1, 1)[:8], mask.repeat(2, 1)[:8]
    s = NoiseSchedule.linear(1000)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = gen(0)

    def loss_at_fixed_noise():
        with torch.no_grad():
            return text_diffusion_loss(model, s, z, tokens, mask, p_uncond=0.0, generator=gen(123)).item()

    before = loss_at_fixed_noise()
    for _ in range(40):
        loss = text_diffusion_loss(model, s, z, tokens, mask, p_uncond=0.1, generator=g)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss_at_fixed_noise() < 0.8 * before


def manual_guided_ddim(model, s, tokens, mask, steps, w, seed):
    """DDIM with eps = eps_null + w (eps_caption - eps_null), written out with ddim_step (eta = 0)."""
    g = gen(seed)
    x = torch.randn(tokens.shape[0], 4, 7, 7, generator=g)
    ts = ddim_timesteps(s.T, steps)
    with torch.no_grad():
        for t, t_prev in zip(ts, ts[1:] + [-1]):
            eps_c = model(x, t, tokens, mask)
            eps_u = model(x, t)
            x, _ = ddim_step(s, eps_u + w * (eps_c - eps_u), x, t, t_prev=t_prev)
    return x


def test_ddim_sample_equals_a_hand_written_guided_loop():
    model = small_model().train()
    tokens, mask = captions()
    s = NoiseSchedule.linear(1000)
    got = text_ddim_sample(model, s, tokens, mask, steps=4, guidance_scale=2.5, generator=gen(7))
    assert got.shape == (3, 4, 7, 7)
    assert model.training  # sampled in eval mode, then the mode is restored
    expected = manual_guided_ddim(model.eval(), s, tokens, mask, steps=4, w=2.5, seed=7)
    assert (got - expected).abs().max() < 1e-4 * (1 + expected.abs().max())


def test_guidance_zero_ignores_the_caption_and_one_does_not():
    model = small_model()
    tokens, mask = captions()
    other, other_mask = captions(seed=5)
    s = NoiseSchedule.linear(1000)

    def sample(tok, m, w):
        return text_ddim_sample(model, s, tok, m, steps=3, guidance_scale=w, generator=gen(1))

    assert (sample(tokens, mask, 0.0) - sample(other, other_mask, 0.0)).abs().max() < 1e-4
    assert (sample(tokens, mask, 1.0) - sample(other, other_mask, 1.0)).abs().max() > 1e-3
    assert torch.equal(sample(tokens, mask, 3.0), sample(tokens, mask, 3.0))  # same seed, same samples
