"""The mixed-precision policy (course_lib.precision): which dtype each device class gets, and that the
fp16 path's GradScaler does what it is for. CUDA devices are faked by their compute capability."""
import pytest
import torch
from torch import nn

from course_lib.precision import Precision, precision_policy


@pytest.fixture
def fake_gpu(monkeypatch):
    """Pretend a CUDA device of the given compute capability is present."""
    def install(capability):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
        monkeypatch.delenv("COURSE_DEVICE", raising=False)
    return install


@pytest.mark.parametrize("capability, dtype", [
    ((7, 5), torch.float16),   # T4 (Colab's free GPU): no native bf16, fast fp16 tensor cores
    ((7, 0), torch.float16),   # V100
    ((8, 0), torch.bfloat16),  # A100
    ((8, 9), torch.bfloat16),  # L4
    ((9, 0), torch.bfloat16),  # H100
])
def test_cuda_cards_get_bf16_only_when_native(fake_gpu, capability, dtype):
    fake_gpu(capability)
    for policy in (precision_policy(), precision_policy("cuda"), precision_policy(torch.device("cuda", 0))):
        assert policy == Precision("cuda", dtype)
        assert policy.needs_scaler == (dtype == torch.float16)
    assert precision_policy("cuda", enabled=False) == Precision("cuda", torch.float32)


def test_cpu_and_mps_train_in_fp32_unless_asked(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delenv("COURSE_DEVICE", raising=False)
    if getattr(torch.backends, "mps", None) is not None:
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert precision_policy() == Precision("cpu", torch.float32)
    assert not precision_policy("cpu").needs_scaler
    assert precision_policy("cpu", enabled=True) == Precision("cpu", torch.bfloat16)
    assert precision_policy("mps") == Precision("mps", torch.float32)


def test_autocast_and_scaler_follow_the_dtype():
    w = torch.randn(4, 4)
    for dtype in (torch.float16, torch.bfloat16, torch.float32):
        policy = Precision("cpu", dtype)
        with policy.autocast():
            assert (w @ w).dtype == dtype
            with policy.fp32():
                assert (w @ w).dtype == torch.float32
        assert policy.grad_scaler().is_enabled() == (dtype == torch.float16)


def test_the_fp16_scaler_keeps_a_small_gradient_that_fp16_flushes_to_zero():
    """d loss / d w = 1e-8 is below fp16's smallest number (6e-8): without scaling it becomes 0."""
    policy = Precision("cpu", torch.float16)

    def grad(scaled):
        layer = nn.Linear(1, 1, bias=False)
        nn.init.ones_(layer.weight)
        opt = torch.optim.SGD(layer.parameters(), lr=0.0)
        with policy.autocast():
            out = layer(torch.full((1, 1), 1e-4))  # fp16
        loss = out.float().sum() * 1e-4  # a loss in fp32, as autocast gives for mse_loss or cross_entropy
        if scaled:
            scaler = policy.grad_scaler()
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
        else:
            loss.backward()
        return layer.weight.grad.item()

    assert grad(scaled=False) == 0.0
    assert grad(scaled=True) == pytest.approx(1e-8, rel=1e-2)
