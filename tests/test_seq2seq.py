"""course_lib.seq2seq: masks, causality, cached decoding, beam search against brute-force enumeration."""
import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from course_lib.seq2seq import (
    Seq2SeqConfig, Seq2SeqTransformer, beam_search, cross_attention_maps, greedy_decode, next_token_log_probs,
    seq2seq_loss,
)

F64 = torch.float64
PAD, BOS, EOS = 0, 1, 2


def tiny_model(seed=0, vocab=9, **overrides):
    torch.manual_seed(seed)
    kwargs = dict(src_vocab_size=vocab, tgt_vocab_size=vocab, d_model=16, n_head=2, n_enc_layer=2, n_dec_layer=2,
                  dropout=0.0, max_len=20) | overrides
    model = Seq2SeqTransformer(Seq2SeqConfig(**kwargs)).to(F64).eval()
    with torch.no_grad():  # sharper, more varied distributions than at initialization
        for name, p in model.named_parameters():
            if p.dim() == 2 and "emb" not in name:
                p.mul_(3.0)
    return model


def random_src(B, S, vocab=9, seed=0):
    return torch.randint(3, vocab, (B, S), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("pos_emb", ["sinusoidal", "learned"])
def test_source_padding_does_not_change_the_output(pos_emb):
    model = tiny_model(pos_emb=pos_emb)
    src, tgt_in = random_src(1, 5), torch.tensor([[BOS, 4, 5, 6]])
    padded = torch.cat([src, torch.full((1, 4), PAD)], dim=1)  # the same sentence with 4 padding tokens
    assert torch.allclose(model(padded, tgt_in), model(src, tgt_in), atol=1e-12)
    # in a batch next to a longer sentence
    batch = torch.cat([padded, random_src(1, 9, seed=1)])
    assert torch.allclose(model(batch, tgt_in.expand(2, -1))[0], model(src, tgt_in)[0], atol=1e-12)
    # and the padded positions get no cross-attention
    _, attn = model(batch, tgt_in.expand(2, -1), return_attention=True)
    assert len(attn["cross"]) == 2 and attn["cross"][0].shape == (2, 2, 4, 9)
    assert all(torch.all(w[0, ..., 5:] == 0) for w in attn["cross"])
    assert torch.allclose(attn["cross"][1].sum(-1), torch.ones(2, 2, 4, dtype=F64), atol=1e-12)
    assert attn["encoder"][0].shape == (2, 2, 9, 9) and attn["decoder_self"][0].shape == (2, 2, 4, 4)


def test_a_real_source_token_does_change_the_output():
    model = tiny_model()
    src, tgt_in = random_src(1, 5), torch.tensor([[BOS, 4, 5]])
    src2 = src.clone()
    src2[0, 2] = 3 if src[0, 2] != 3 else 4
    assert not torch.allclose(model(src, tgt_in), model(src2, tgt_in), atol=1e-6)


def test_without_cross_attention_the_source_is_ignored():
    model = tiny_model(cross_attention=False)
    assert not hasattr(model, "encoder")
    tgt_in = torch.tensor([[BOS, 4, 5]])
    assert torch.allclose(model(random_src(1, 5), tgt_in), model(random_src(1, 7, seed=3), tgt_in), atol=0)
    assert model.num_params() < tiny_model().num_params()


def test_decoder_is_causal():
    model = tiny_model()
    src = random_src(2, 6)
    tgt_in = torch.cat([torch.full((2, 1), BOS), random_src(2, 7, seed=1)], dim=1)  # (2, 8)
    logits = model(src, tgt_in)
    for t in (1, 4, 7):
        changed = tgt_in.clone()
        changed[:, t] = 3 + (changed[:, t] - 2) % 6
        logits2 = model(src, changed)
        assert torch.allclose(logits2[:, :t], logits[:, :t], atol=1e-12)
        assert not torch.allclose(logits2[:, t], logits[:, t], atol=1e-6)


def sequence_log_prob(model, src, seq):
    """log p(seq | src) by teacher forcing, with PAD and BOS forbidden: an independent scorer for decoding."""
    tgt_in = torch.tensor([[BOS] + seq[:-1]])
    logits = model(src, tgt_in)[0].clone()  # (T, V)
    logits[:, [PAD, BOS]] = float("-inf")
    return F.log_softmax(logits, -1)[torch.arange(len(seq)), seq].sum().item()


def test_greedy_decoding_with_cache_matches_the_full_forward():
    model = tiny_model(seed=1)
    src = torch.cat([random_src(2, 6), torch.tensor([[4, 5, 6, PAD, PAD, PAD]])])
    hyp = greedy_decode(model, src, max_len=10)
    for b in range(3):
        seq = hyp.tokens[b, : hyp.lengths[b]].tolist()
        assert EOS not in seq[:-1] and (seq[-1] == EOS or len(seq) == 10)
        assert torch.all(hyp.tokens[b, hyp.lengths[b]:] == PAD)
        assert math.isclose(hyp.scores[b].item(), sequence_log_prob(model, src[b:b + 1], seq), abs_tol=1e-10)
        logits = model(src[b:b + 1], torch.tensor([[BOS] + seq[:-1]]))[0]  # each token is the argmax
        assert next_token_log_probs(model, logits).argmax(-1).tolist() == seq


def test_cross_attention_maps_are_the_weights_used_step_by_step():
    model = tiny_model(seed=3)
    src = torch.tensor([[4, 5, 6, 7, 8], [3, 4, 5, PAD, PAD]])
    hyp = greedy_decode(model, src, max_len=6)
    maps = cross_attention_maps(model, src, hyp.tokens)
    assert len(maps) == 2 and maps[0].shape == (2, 2, hyp.tokens.size(1), 5)
    memory, src_mask = model.encode(src)
    cache, token = model.new_cache(), torch.full((2, 1), BOS)
    for t in range(hyp.tokens.size(1)):  # decode again, one step at a time, recording the weights
        _, attn = model.decode(token, memory, src_mask, cache=cache, return_attention=True)
        for layer in range(2):
            assert torch.allclose(attn["cross"][layer][:, :, 0], maps[layer][:, :, t], atol=1e-12)
        token = hyp.tokens[:, t:t + 1]


def test_beam_size_one_is_greedy():
    for seed in range(4):
        model = tiny_model(seed=seed)
        src = random_src(4, 6, seed=seed)
        greedy, beam = greedy_decode(model, src, max_len=8), beam_search(model, src, beam_size=1, max_len=8)
        L = greedy.tokens.size(1)
        assert torch.equal(beam.tokens[:, :L], greedy.tokens) and torch.all(beam.tokens[:, L:] == PAD)
        assert torch.allclose(beam.scores, greedy.scores, atol=1e-12)


@pytest.mark.parametrize("length_penalty", [0.0, 0.8])
def test_wide_beam_search_finds_the_best_sequence_by_brute_force(length_penalty):
    # vocabulary: PAD, BOS, EOS and 3 words; targets of at most 4 tokens
    model = tiny_model(seed=5, vocab=6)
    max_len, words = 4, [3, 4, 5]
    for s in range(2):
        src = random_src(1, 4, vocab=6, seed=s)
        candidates = [list(p) + [EOS] for n in range(max_len) for p in itertools.product(words, repeat=n)]
        candidates += [list(p) for p in itertools.product(words, repeat=max_len)]  # truncated, no EOS
        scored = [(sequence_log_prob(model, src, seq) / len(seq) ** length_penalty, seq) for seq in candidates]
        best_score, best_seq = max(scored)
        # a beam wider than the number of hypotheses is exhaustive
        hyp = beam_search(model, src, beam_size=len(candidates), max_len=max_len, length_penalty=length_penalty)
        assert hyp.tokens[0, : hyp.lengths[0]].tolist() == best_seq
        assert math.isclose(hyp.scores[0].item(), best_score, abs_tol=1e-10)
        # a narrow beam is never better than the optimum, and its score is the true score of its output
        narrow = beam_search(model, src, beam_size=2, max_len=max_len, length_penalty=length_penalty)
        seq = narrow.tokens[0, : narrow.lengths[0]].tolist()
        assert narrow.scores[0].item() <= best_score + 1e-12
        assert math.isclose(narrow.scores[0].item(), sequence_log_prob(model, src, seq) / len(seq) ** length_penalty,
                            abs_tol=1e-10)


def test_batched_beam_search_equals_one_sentence_at_a_time():
    model = tiny_model(seed=2)
    src = torch.cat([random_src(2, 7), torch.tensor([[5, 6, 7, 3, PAD, PAD, PAD]])])
    batch = beam_search(model, src, beam_size=3, max_len=9, length_penalty=0.6)
    for b in range(3):
        one = beam_search(model, src[b:b + 1, : 4 if b == 2 else 7], beam_size=3, max_len=9, length_penalty=0.6)
        n = one.lengths[0]
        assert batch.lengths[b] == n and torch.equal(batch.tokens[b, :n], one.tokens[0, :n])
        assert math.isclose(batch.scores[b].item(), one.scores[0].item(), abs_tol=1e-10)


def test_loss_with_label_smoothing_ignores_padding():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 7, generator=g, dtype=F64)
    targets = torch.tensor([[3, 4, 2, PAD, PAD], [5, 6, 3, 4, 2]])
    eps, V = 0.1, 7
    logp = F.log_softmax(logits, -1)
    smoothed = -(1 - eps) * logp.gather(-1, targets[..., None])[..., 0] - eps / V * logp.sum(-1)  # (2, 5)
    keep = targets != PAD
    expected = smoothed[keep].mean()
    assert math.isclose(seq2seq_loss(logits, targets, PAD, label_smoothing=eps).item(), expected.item(), abs_tol=1e-12)
    with pytest.raises(ValueError, match="disagree"):
        seq2seq_loss(logits, targets[:, :4], PAD)


def test_clear_errors():
    model = tiny_model()
    with pytest.raises(ValueError, match="longer than max_len=20"):
        model(random_src(1, 21), torch.tensor([[BOS]]))
    with pytest.raises(ValueError, match=r"src must be token ids of shape \(B, length\)"):
        model(random_src(1, 5)[0], torch.tensor([[BOS]]))
    with pytest.raises(ValueError, match="same batch size"):
        model(random_src(2, 5), torch.tensor([[BOS]]))
    with pytest.raises(ValueError, match="divisible"):
        Seq2SeqConfig(10, 10, d_model=10, n_head=3)


def test_a_tiny_model_learns_to_reverse_sequences():
    torch.manual_seed(0)
    model = Seq2SeqTransformer(Seq2SeqConfig(src_vocab_size=8, tgt_vocab_size=8, d_model=32, n_head=2,
                                             n_enc_layer=1, n_dec_layer=1, dropout=0.0, max_len=8))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)

    def batch(n):
        src = torch.randint(3, 8, (n, 4), generator=g)  # 4 words out of 5
        tgt = torch.cat([torch.full((n, 1), BOS), src.flip(1), torch.full((n, 1), EOS)], dim=1)
        return src, tgt

    for _ in range(200):
        src, tgt = batch(32)
        loss = seq2seq_loss(model(src, tgt[:, :-1]), tgt[:, 1:], PAD)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    src, tgt = batch(50)
    out = greedy_decode(model, src, max_len=6).tokens
    accuracy = (out[:, :5] == tgt[:, 1:]).all(1).float().mean().item()
    assert accuracy >= 0.9, accuracy


def test_pooled_source_is_the_masked_mean_of_the_encoder_output():
    full, pooled = tiny_model(seed=4), tiny_model(seed=4, pool_source=True)
    src = torch.tensor([[4, 5, 6, 7, 8], [3, 4, 5, PAD, PAD]])
    memory, mask = full.encode(src)  # the same weights: the same encoder
    pooled_memory, pooled_mask = pooled.encode(src)
    assert pooled_memory.shape == (2, 1, 16) and pooled_mask.shape == (2, 1, 1, 1) and pooled_mask.all()
    assert torch.allclose(pooled_memory[0, 0], memory[0].mean(0), atol=1e-12)
    assert torch.allclose(pooled_memory[1, 0], memory[1, :3].mean(0), atol=1e-12)  # padding left out
    tgt_in = torch.tensor([[BOS, 4, 5]] * 2)
    assert not torch.allclose(pooled(src, tgt_in), full(src, tgt_in), atol=1e-6)
    # the amount of padding does not matter, and decoding works on the single key
    assert torch.allclose(pooled(src[1:, :3], tgt_in[:1]), pooled(src[1:], tgt_in[:1]), atol=1e-12)
    hyp = greedy_decode(pooled, src, max_len=5)
    assert cross_attention_maps(pooled, src, hyp.tokens)[0].shape == (2, 2, hyp.tokens.size(1), 1)
    with pytest.raises(ValueError, match="pool_source=True needs cross_attention=True"):
        Seq2SeqConfig(10, 10, pool_source=True, cross_attention=False)
