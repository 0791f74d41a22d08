"""course_lib.adapters: identity at init, the adapter formula, parameter counts, which weights learn."""
import copy
import math

import pytest
import torch
from torch import nn

from course_lib.adapters import AdaptedLinear, AdapterConfig, BottleneckAdapter, add_adapters
from course_lib.lora import parameter_counts

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread is faster

from tiny_models import D, LABELS, LAYERS, tiny_bert, tokens  # noqa: E402


def test_identity_at_init():
    base = tiny_bert()
    model = copy.deepcopy(base)
    add_adapters(model, AdapterConfig(bottleneck=8))
    x = tokens()
    with torch.no_grad():
        assert torch.equal(model(input_ids=x).logits, base(input_ids=x).logits)


def test_forward_equals_hand_computation():
    torch.manual_seed(0)
    layer = AdaptedLinear(nn.Linear(6, 5), bottleneck=3).double()
    with torch.no_grad():
        layer.adapter.up.weight.normal_()
        layer.adapter.up.bias.normal_()
    x = torch.randn(4, 6, dtype=torch.float64)
    W, b = layer.base.weight, layer.base.bias
    Wd, bd, Wu, bu = layer.adapter.down.weight, layer.adapter.down.bias, layer.adapter.up.weight, layer.adapter.up.bias
    h = x @ W.T + b  # (4, 5)
    z = h @ Wd.T + bd  # (4, 3)
    gelu = 0.5 * z * (1 + torch.erf(z / math.sqrt(2)))  # exact GELU
    expected = h + gelu @ Wu.T + bu
    assert torch.allclose(layer(x), expected, atol=1e-12)


def test_two_adapters_per_layer_and_analytic_counts():
    model = tiny_bert()
    _, base_total = parameter_counts(model)
    m = 8
    names = add_adapters(model, AdapterConfig(bottleneck=m))
    assert names == [f"bert.encoder.layer.{i}.{s}" for i in range(LAYERS)
                     for s in ("attention.output.dense", "output.dense")]
    adapters = 2 * LAYERS * (2 * D * m + D + m)
    layer_norms = (2 * LAYERS + 1) * 2 * D  # two per layer plus the embeddings' LayerNorm, gain and bias each
    head = D * LABELS + LABELS
    assert sum(isinstance(mod, BottleneckAdapter) for mod in model.modules()) == 2 * LAYERS
    assert parameter_counts(model) == (adapters + layer_norms + head, base_total + adapters)


def test_only_adapters_layer_norms_and_head_get_gradients():
    model = tiny_bert()
    add_adapters(model, AdapterConfig(bottleneck=8))
    with torch.no_grad():  # W_up = 0 would leave W_down without gradient at the first step
        for mod in model.modules():
            if isinstance(mod, BottleneckAdapter):
                mod.up.weight.normal_(std=0.1)
    labels = torch.randint(0, LABELS, (3, 7), generator=torch.Generator().manual_seed(1))
    model(input_ids=tokens(), labels=labels).loss.backward()
    for name, p in model.named_parameters():
        expect = ".adapter." in name or "LayerNorm" in name or name.startswith("classifier.")
        if expect:
            assert p.requires_grad and p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert not p.requires_grad and p.grad is None, name


def test_clear_errors():
    with pytest.raises(ValueError, match="No nn.Linear matches"):
        add_adapters(tiny_bert(), AdapterConfig(target_modules=("attn.c_proj",)))
    with pytest.raises(ValueError, match="No module matches trainable_modules"):
        add_adapters(tiny_bert(), AdapterConfig(trainable_modules=("head",)))
    with pytest.raises(ValueError, match="bottleneck"):
        AdapterConfig(bottleneck=0)
    with pytest.raises(ValueError, match="wraps an nn.Linear"):
        AdaptedLinear(nn.Conv1d(2, 2, 1))
