"""course_lib.lora: parity with peft, identity at init, merging, frozen base weights, parameter counts."""
import copy

import pytest
import torch
from torch import nn

from course_lib.gpt import GPT, GPTConfig
from course_lib.lora import LoRAConfig, LoRALinear, add_lora, merge_lora, parameter_counts

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread is faster

from tiny_models import D, FF, LABELS, LAYERS, tiny_bert, tokens  # noqa: E402


def randomize_lora_B(model, seed=1):
    """B = 0 at init makes every LoRA branch vanish; random B makes the checks below see the update."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, LoRALinear):
                m.lora_B.copy_(torch.randn(m.lora_B.shape, generator=g))


@pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")  # raised inside peft
def test_matches_peft_outputs_and_trainable_count():
    import peft
    base = tiny_bert()
    ours = copy.deepcopy(base)
    theirs = peft.get_peft_model(copy.deepcopy(base), peft.LoraConfig(
        r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["query", "value"], modules_to_save=["classifier"]))
    names = add_lora(ours, LoRAConfig(r=4, alpha=8, target_modules=("query", "value"),
                                      trainable_modules=("classifier",)))
    assert len(names) == 2 * LAYERS
    inner = theirs.base_model.model
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name in names:
            p_layer, o_layer = inner.get_submodule(name), ours.get_submodule(name)
            p_layer.lora_B["default"].weight.copy_(torch.randn(p_layer.lora_B["default"].weight.shape, generator=g))
            assert p_layer.scaling["default"] == o_layer.scaling == 2.0
            o_layer.lora_A.copy_(p_layer.lora_A["default"].weight)  # (r, in)
            o_layer.lora_B.copy_(p_layer.lora_B["default"].weight)  # (out, r)
    theirs.eval(), ours.eval()
    x = tokens()
    with torch.no_grad():
        ref, out, plain = theirs(input_ids=x).logits, ours(input_ids=x).logits, base(input_ids=x).logits
    assert not torch.allclose(ref, plain, atol=1e-3)  # the update is really there ...
    assert torch.allclose(out, ref, atol=1e-5)  # ... and computed as peft does
    # peft wraps "classifier" in a ModulesToSaveWrapper: the original head (frozen) plus a trainable
    # copy, so its *total* includes the head twice; the trainable numbers mean the same thing.
    p_trainable, p_total = theirs.get_nb_trainable_parameters()
    trainable, total = parameter_counts(ours)
    head = D * LABELS + LABELS
    assert trainable == p_trainable
    assert total == p_total - head


def test_identity_at_init():
    base = tiny_bert()
    model = copy.deepcopy(base)
    add_lora(model, LoRAConfig(r=4, target_modules=("query", "key", "value", "dense")))
    x = tokens()
    with torch.no_grad():
        assert torch.equal(model(input_ids=x).logits, base(input_ids=x).logits)  # B = 0: exactly the base model


def test_merge_equals_unmerged_and_removes_lora_layers():
    model = tiny_bert()
    add_lora(model, LoRAConfig(r=4, alpha=8, target_modules=("query", "value", "intermediate.dense")))
    randomize_lora_B(model)
    x = tokens()
    with torch.no_grad():
        before = model(input_ids=x).logits
        merge_lora(model)
        after = model(input_ids=x).logits
    assert not any(isinstance(m, LoRALinear) for m in model.modules())
    assert type(model.bert.encoder.layer[0].attention.self.query) is nn.Linear
    assert torch.allclose(after, before, atol=1e-5)


def test_merged_weight_formula():
    torch.manual_seed(0)
    layer = LoRALinear(nn.Linear(6, 5), r=2, alpha=3.0)
    with torch.no_grad():
        layer.lora_B.normal_()
    x = torch.randn(4, 6)
    W, b, A, B = layer.base.weight, layer.base.bias, layer.lora_A, layer.lora_B
    expected = x @ W.T + b + 1.5 * (x @ A.T) @ B.T  # alpha / r = 1.5
    assert torch.allclose(layer(x), expected, atol=1e-6)
    assert torch.allclose(layer.merge()(x), expected, atol=1e-6)


def test_one_step_changes_only_lora_and_head():
    model = tiny_bert()
    model.train()
    add_lora(model, LoRAConfig(r=4, dropout=0.1, trainable_modules=("classifier",)))
    # at init B = 0, so dL/dA = 0 exactly and only B (and the head) get a signal
    labels = torch.randint(0, LABELS, (3, 7), generator=torch.Generator().manual_seed(2))
    model(input_ids=tokens(), labels=labels).loss.backward()
    for name, p in model.named_parameters():
        if name.endswith("lora_A"):
            assert torch.count_nonzero(p.grad) == 0, name
    model.zero_grad(set_to_none=True)
    randomize_lora_B(model)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)  # all params, on purpose
    model(input_ids=tokens(), labels=labels).loss.backward()
    optimizer.step()
    for name, p in model.named_parameters():
        expect_trainable = "lora_" in name or name.startswith("classifier.")
        assert p.requires_grad == expect_trainable, name
        if expect_trainable:
            assert not torch.equal(p, before[name]), name
        else:
            assert p.grad is None and torch.equal(p, before[name]), name  # bit-identical


def test_trainable_count_is_r_times_in_plus_out():
    model = tiny_bert()
    _, base_total = parameter_counts(model)
    r = 3
    names = add_lora(model, LoRAConfig(r=r, target_modules=("query", "value", "intermediate.dense", "output.dense")))
    # per layer: query, value (32 -> 32), intermediate.dense (32 -> 64), output.dense (64 -> 32),
    # attention.output.dense (32 -> 32)
    per_layer = r * ((D + D) * 2 + (D + FF) + (FF + D) + (D + D))
    assert len(names) == 5 * LAYERS
    assert parameter_counts(model) == (LAYERS * per_layer, base_total + LAYERS * per_layer)


def test_course_gpt_merge_parity_and_generate():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=13, block_size=16, n_layer=2, n_head=2, n_embd=16)).eval()
    n_base = model.num_params()  # counts the tied lm_head / wte matrix once
    names = add_lora(model, LoRAConfig(r=2, target_modules=("attn.qkv", "attn.out_proj")))
    assert names == ["h.0.attn.qkv", "h.0.attn.out_proj", "h.1.attn.qkv", "h.1.attn.out_proj"]
    lora = 2 * 2 * ((16 + 48) + (16 + 16))
    assert parameter_counts(model) == (lora, n_base + lora)
    randomize_lora_B(model)
    x = torch.randint(0, 13, (2, 10), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = model(x)[0]
        out_before = model.generate(x[:, :3], 20, greedy=True)  # through the KV cache and past block_size
        merge_lora(model)
        after = model(x)[0]
        out_after = model.generate(x[:, :3], 20, greedy=True)
    assert torch.allclose(after, before, atol=1e-5)
    assert out_after.shape == (2, 23) and torch.equal(out_after, out_before)
    assert model.lm_head.weight is model.wte.weight  # merging leaves the weight tying alone


def test_clear_errors():
    with pytest.raises(ValueError, match="No nn.Linear matches.*attention.self.query"):
        add_lora(tiny_bert(), LoRAConfig(target_modules=("c_attn",)))
    with pytest.raises(ValueError, match="No module matches trainable_modules"):
        add_lora(tiny_bert(), LoRAConfig(trainable_modules=("classifer",)))
    with pytest.raises(ValueError, match="rank r"):
        LoRAConfig(r=0)
    with pytest.raises(ValueError, match="alpha"):
        LoRAConfig(alpha=0.0)
    with pytest.raises(ValueError, match="dropout"):
        LoRAConfig(dropout=1.0)
    with pytest.raises(ValueError, match="tuple of names"):
        LoRAConfig(target_modules="query")
    with pytest.raises(ValueError, match="wraps an nn.Linear"):
        LoRALinear(nn.Conv1d(2, 2, 1))
    with pytest.raises(ValueError, match="rank r"):
        LoRAConfig(r=True)  # a bool is an int in Python, not a rank
    twice = tiny_bert()
    add_lora(twice)
    with pytest.raises(ValueError, match="already has LoRA layers.*merge_lora"):
        add_lora(twice)
    with pytest.raises(ValueError, match="no LoRA layers to merge"):
        merge_lora(tiny_bert())
