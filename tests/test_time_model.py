"""The time model of scripts/time_model.py: its counters on cases with known answers, and the gpu profile's
budget (every notebook's T4 estimate within 15 minutes). All counting runs on the meta device: no arithmetic."""
import json
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import time_model as tm  # noqa: E402
import update_readme  # noqa: E402


def test_linear_layer_counts():
    B, n_in, n_out = 32, 100, 20
    layer = tm.meta(lambda: nn.Linear(n_in, n_out))
    x = tm.rand(B, n_in)
    with torch.no_grad():
        work = tm.count(lambda: layer(x))
    assert work.flops == 2 * B * n_in * n_out  # forward: one multiply-add per weight per row
    assert work.launches == 1  # one addmm; the weight's transpose is a view
    assert work.mm_bytes == 4 * (B * n_in + n_in * n_out + n_out + B * n_out) and work.other_bytes == 0
    # forward and backward with an input that needs no gradient: the weight gradient doubles the FLOPs
    work = tm.count(lambda: layer(x).sum().backward())
    assert work.flops == 2 * 2 * B * n_in * n_out


def test_optimizer_launches_follow_the_device():
    """Adam updates tensor by tensor on a CPU and with multi-tensor kernels on a GPU: the launches say so."""
    build = lambda: nn.Sequential(*[nn.Linear(8, 8) for _ in range(10)])  # noqa: E731
    loss = lambda m: m(tm.rand(4, 8)).sum()  # noqa: E731
    cpu, gpu = tm.train_work(build, loss, on_gpu=False), tm.train_work(build, loss, on_gpu=True)
    assert cpu.flops == gpu.flops and cpu.launches > gpu.launches + 50


def test_device_seconds():
    d = tm.Device("x", amp_flops=1e12, fp32_flops=1e11, bandwidth=1e9, launch_us=10.0, setup_s=0.0, half_bytes=True)
    compute_bound = tm.Work(flops=1e12, mm_bytes=1e6, launches=100)
    assert compute_bound.seconds(d) == pytest.approx(1.0 + 100 * 10e-6)
    assert compute_bound.seconds(d, amp=False) == pytest.approx(10.0 + 1e-3)  # fp32 is 10x slower here
    memory_bound = tm.Work(flops=1e6, mm_bytes=4e9, other_bytes=1e9)
    assert memory_bound.seconds(d) == pytest.approx(3.0)  # 16-bit matmul operands under autocast: 2e9 + 1e9 bytes


def test_sizes_come_from_the_notebook():
    gpu, cpu = tm.notebook_sizes("07_ddpm", "gpu"), tm.notebook_sizes("07_ddpm", "cpu")
    assert gpu.profile == "gpu" and cpu.profile == "cpu"
    steps = {p: {loop.name: loop.steps for loop in tm.LOOPS["07_ddpm"](c)} for p, c in (("gpu", gpu), ("cpu", cpu))}
    assert steps["gpu"]["DDPM UNet"] == gpu.train_steps and steps["cpu"]["DDPM UNet"] == cpu.train_steps
    assert set(tm.LOOPS) == {p.stem for p in (ROOT / "notebooks").glob("*.ipynb")}, "one entry per notebook"


def test_every_notebook_fits_a_t4_in_15_minutes():
    bench = json.loads(tm.BENCH.read_text())
    host = tm.cpu_device(bench)
    over = {}
    for stem in tm.LOOPS:
        minutes = tm.predict(stem, tm.DEVICES["T4"], "gpu", host).minutes
        if minutes > tm.T4_BUDGET_MIN:
            over[stem] = round(minutes, 1)
    assert not over, (f"estimated T4 minutes of the gpu profile over {tm.T4_BUDGET_MIN:g}: {over}; "
                      "shrink those notebooks' gpu=dict(...) sizes (`python scripts/time_model.py --only NB` "
                      "shows which loops cost what)")


def test_readme_shows_an_estimate_only_without_a_record():
    assert update_readme.timed(None, False, estimate_min=7.4) == "~7 min on a T4, estimated"
    assert update_readme.timed(600.0, False, estimate_min=7.4) == "10.0 min"  # a measured record wins
    assert update_readme.timed(None, False, exists=False, estimate_min=7.4) == ""  # a planned notebook


def test_doctor_says_how_long_the_course_takes(tmp_path):
    from course_lib import doctor

    estimates = {"notebooks": {"a": {"gpu_minutes": {"T4": 30.0, "L4": 12.0, "A100": 6.0, "H100": 3.0}},
                               "b": {"gpu_minutes": {"T4": 60.0, "L4": 24.0, "A100": 12.0, "H100": 6.0}}}}
    (tmp_path / "time_model.json").write_text(json.dumps(estimates))
    assert "1.5 h for all 2 notebooks (estimated for a T4" in doctor.course_minutes("cuda (Tesla T4)", tmp_path)
    assert "0.6 h" in doctor.course_minutes("cuda (NVIDIA L4)", tmp_path)
    assert "a T4 (this card is not in the estimates" in doctor.course_minutes("cuda (Quadro P1000)", tmp_path)
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "cpu.json").write_text(json.dumps({"notebook": "a", "profile": "cpu", "wall_time_s": 1800}))
    assert "0.5 h for 1 notebooks on 2 cores (measured)" in doctor.course_minutes("cpu (2 threads)", tmp_path)
    assert doctor.course_minutes("cuda (Tesla T4)", tmp_path / "nowhere") == ""
