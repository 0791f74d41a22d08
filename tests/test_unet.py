"""course_lib.unet: shapes, conditioning, gradients, input checks, and attention against an explicit softmax."""
import math

import pytest
import torch

from course_lib.train import count_parameters
from course_lib.unet import SelfAttention, UNet, UNetConfig, sinusoidal_embedding


def small_unet(num_classes=10, seed=0, **kw):
    torch.manual_seed(seed)
    cfg = dict(base_channels=8, channel_mults=(1, 2, 2), groups=4, attention_heads=2, num_classes=num_classes)
    cfg.update(kw)
    return UNet(UNetConfig(**cfg)).eval()


def inputs(b=3, c=1, h=28, w=28, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, c, h, w, generator=g), torch.randint(0, 1000, (b,), generator=g)


def test_output_shape_for_mnist_and_other_sizes():
    model = small_unet()
    x, t = inputs()
    assert model(x, t, torch.tensor([0, 5, 10])).shape == (3, 1, 28, 28)
    wide = small_unet(num_classes=None, in_channels=2)
    x2, t2 = inputs(b=2, c=2, h=16, w=32)  # e.g. a small spectrogram, 2 channels
    assert wide(x2, t2).shape == (2, 2, 16, 32)
    two_levels = small_unet(channel_mults=(1, 2), blocks_per_level=2, attention=False)
    x3, t3 = inputs(b=2, h=10, w=6)  # two levels: divisible by 2 is enough
    assert two_levels(x3, t3).shape == (2, 1, 10, 6)


def test_default_config_is_lean():
    model = UNet(UNetConfig(num_classes=10))
    assert 0.2e6 < count_parameters(model) < 1.5e6  # small enough to train on 2 CPU cores


def test_output_depends_on_t_and_on_label():
    model = small_unet()
    x, _ = inputs(b=2)
    y = torch.tensor([3, 3])
    out_t0 = model(x, torch.tensor([0, 0]), y)
    out_t500 = model(x, torch.tensor([500, 500]), y)
    assert (out_t0 - out_t500).abs().max() > 1e-3
    out_other_label = model(x, torch.tensor([0, 0]), torch.tensor([7, 7]))
    assert (out_t0 - out_other_label).abs().max() > 1e-3
    out_null = model(x, torch.tensor([0, 0]), torch.tensor([10, 10]))  # label 10 = the null label
    assert (out_t0 - out_null).abs().max() > 1e-3
    assert torch.equal(model(x, torch.tensor([0, 0])), out_null)  # labels=None means the null label
    assert model.null_label == 10 and small_unet(num_classes=None).null_label is None


def test_int_t_equals_tensor_t_and_examples_are_independent():
    model = small_unet()
    x, _ = inputs(b=4)
    y = torch.tensor([1, 2, 3, 4])
    full = model(x, 250, y)
    assert torch.allclose(full, model(x, torch.full((4,), 250), y))
    # GroupNorm normalizes per example, so an example's output does not depend on the rest of the
    # batch (guided_eps relies on this when it stacks the conditional and unconditional inputs)
    assert torch.allclose(full[1:2], model(x[1:2], 250, y[1:2]), atol=1e-5)


def test_gradients_reach_every_parameter():
    model = small_unet(dropout=0.1).train()
    x, t = inputs(b=4)
    loss = model(x, t, torch.tensor([0, 1, 2, 10])).pow(2).mean()
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert p.grad.abs().max() > 0, name


def test_sinusoidal_embedding_matches_formula():
    t = torch.tensor([0, 1, 37, 999])
    emb = sinusoidal_embedding(t, 16)
    assert emb.shape == (4, 16)
    for row, step in zip(emb, t.tolist()):
        for i in range(8):
            w = 10_000 ** (-i / 8)
            assert math.isclose(row[i].item(), math.sin(step * w), abs_tol=1e-4)
            assert math.isclose(row[8 + i].item(), math.cos(step * w), abs_tol=1e-4)


def test_self_attention_matches_explicit_softmax():
    torch.manual_seed(0)
    attn = SelfAttention(channels=8, heads=2, groups=4)
    x = torch.randn(2, 8, 3, 5)
    B, C, H, W, h = 2, 8, 3, 5, 2
    q, k, v = attn.qkv(attn.norm(x)).reshape(B, 3 * C, H * W).chunk(3, dim=1)  # (B, C, HW) each
    d = C // h
    outs = []
    for head in range(h):
        qh, kh, vh = (z[:, head * d:(head + 1) * d] for z in (q, k, v))  # (B, d, HW)
        weights = torch.softmax(qh.transpose(1, 2) @ kh / math.sqrt(d), dim=-1)  # (B, HW, HW)
        outs.append(vh @ weights.transpose(1, 2))  # (B, d, HW)
    reference = x + attn.proj(torch.cat(outs, dim=1).reshape(B, C, H, W))
    assert torch.allclose(attn(x), reference, atol=1e-5)


@pytest.mark.parametrize("shape, match", [
    ((3, 28, 28), r"expects images of shape \(B, 1, H, W\).*x\[:, None\]"),
    ((2, 3, 28, 28), r"expects images of shape \(B, 1, H, W\)"),
    ((2, 1, 30, 28), "divisible by 4"),
])
def test_wrong_image_shape_raises_clear_error(shape, match):
    with pytest.raises(ValueError, match=match):
        small_unet()(torch.zeros(shape), torch.zeros(shape[0], dtype=torch.long))


def test_wrong_t_and_label_inputs_raise_clear_errors():
    model = small_unet()
    x, t = inputs(b=2)
    with pytest.raises(ValueError, match="t of shape"):
        model(x, torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"10 = the null label.*labels in \[0, 11\)"):
        model(x, t, torch.tensor([0, 11]))
    with pytest.raises(ValueError, match="integer labels"):
        model(x, t, torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="unconditional"):
        small_unet(num_classes=None)(x, t, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="divisible by groups"):
        UNet(UNetConfig(base_channels=12, groups=8))


def test_labels_on_a_gpu_are_not_read_at_every_forward():
    """Checking label values waits for the GPU, and a sampler calls the model at every step: the model checks
    CPU labels itself and leaves device labels to ``check_labels``, which samplers call once. On the meta
    device, which holds no values, a read would raise."""
    model = small_unet().to("meta")
    x = torch.empty(2, 1, 28, 28, device="meta")
    labels = torch.tensor([0, 11], device="meta")  # out of range, and nobody looks at every step
    assert model(x, torch.zeros(2, dtype=torch.long, device="meta"), labels).shape == (2, 1, 28, 28)
    with pytest.raises(ValueError, match=r"10 = the null label.*labels in \[0, 11\)"):
        small_unet().check_labels(torch.tensor([0, 11]))
