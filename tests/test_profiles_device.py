import os
from pathlib import Path

import pytest
import torch

import course_lib
from course_lib.device import get_device, seed_everything
from course_lib.profiles import PROFILES, ProfileError, active_profile, sizes

DECL = dict(smoke=dict(n=1, lr=0.1), cpu=dict(n=10, lr=0.1), gpu=dict(n=100, lr=0.2))


@pytest.mark.parametrize("name", PROFILES)
def test_env_selects_profile(monkeypatch, name):
    monkeypatch.setenv("COURSE_PROFILE", name)
    assert active_profile() == name
    assert sizes(**DECL).n == DECL[name]["n"]


def test_profile_name_is_case_and_space_tolerant(monkeypatch):
    monkeypatch.setenv("COURSE_PROFILE", " CPU ")
    assert active_profile() == "cpu"


def test_default_profile_follows_cuda(monkeypatch):
    monkeypatch.delenv("COURSE_PROFILE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert active_profile() == "gpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert active_profile() == "cpu"


def test_unknown_profile_lists_valid_ones(monkeypatch):
    monkeypatch.setenv("COURSE_PROFILE", "laptop")
    with pytest.raises(ProfileError) as err:
        active_profile()
    message = str(err.value)
    assert "'laptop'" in message and "smoke, cpu, gpu" in message and "export COURSE_PROFILE" in message


def test_sizes_need_all_profiles_with_same_keys():
    with pytest.raises(ProfileError, match="missing: \\['gpu'\\]"):
        sizes(profile="cpu", smoke=dict(n=1), cpu=dict(n=2))
    with pytest.raises(ProfileError, match="same sizes"):
        sizes(profile="cpu", smoke=dict(n=1), cpu=dict(n=2, extra=3), gpu=dict(n=3))
    with pytest.raises(ProfileError, match="Unknown profile"):
        sizes(profile="tpu", **DECL)
    with pytest.raises(ProfileError, match=r"one dict per profile.*'cpu': 'int'"):
        sizes(smoke=dict(a=1), cpu=5, gpu=dict(a=3))


def test_sizes_common_values_reach_every_profile():
    decl = dict(common=dict(lr=0.1, batch=32), smoke=dict(n=1), cpu=dict(n=10), gpu=dict(n=100))
    for name in PROFILES:
        cfg = sizes(profile=name, **decl)
        assert cfg.as_dict() == {"lr": 0.1, "batch": 32, "n": decl[name]["n"]}
    assert sizes(profile="cpu", common={}, smoke=dict(n=1), cpu=dict(n=2), gpu=dict(n=3)).as_dict() == {"n": 2}
    assert sizes(profile="gpu", common=dict(n=4), smoke={}, cpu={}, gpu={}).n == 4


def test_sizes_common_rejects_a_key_also_set_by_a_profile():
    with pytest.raises(ProfileError, match=r"Profile 'cpu' sets \['lr'\], which common= sets too"):
        sizes(profile="cpu", common=dict(lr=0.1), smoke=dict(n=1), cpu=dict(n=2, lr=0.2), gpu=dict(n=3))
    with pytest.raises(ProfileError, match="same sizes"):  # after merging, the profiles still differ
        sizes(profile="cpu", common=dict(lr=0.1), smoke=dict(n=1), cpu=dict(n=2, extra=3), gpu=dict(n=3))
    with pytest.raises(ProfileError, match="common=.*takes a dict"):
        sizes(profile="cpu", common=[("lr", 0.1)], smoke=dict(n=1), cpu=dict(n=2), gpu=dict(n=3))


def test_dry_run_keeps_the_gpu_shapes_and_caps_what_the_notebook_names(monkeypatch):
    decl = dict(smoke=dict(width=8, steps=10), cpu=dict(width=32, steps=1_000), gpu=dict(width=64, steps=10_000),
                dry_run=dict(steps=3))
    assert sizes(profile="gpu", **decl).as_dict() == {"width": 64, "steps": 10_000}  # without the switch: ignored
    monkeypatch.setenv("COURSE_DRY_RUN", "1")
    cfg = sizes(profile="gpu", **decl)
    assert cfg.as_dict() == {"width": 64, "steps": 3} and cfg.dry_run and cfg.profile == "gpu"
    assert repr(cfg).startswith("Sizes[gpu, dry run](")
    with pytest.raises(ProfileError, match="COURSE_PROFILE=gpu"):
        sizes(profile="cpu", **decl)
    with pytest.raises(ProfileError, match="declares no dry_run"):
        sizes(profile="gpu", **{k: v for k, v in decl.items() if k != "dry_run"})
    with pytest.raises(ProfileError, match=r"do not declare: \['stepz'\]"):
        sizes(profile="gpu", **{**decl, "dry_run": dict(stepz=3)})
    monkeypatch.setenv("COURSE_DRY_RUN", "0")
    assert not sizes(profile="gpu", **decl).dry_run


def test_sizes_are_read_only_and_explain_missing_keys():
    cfg = sizes(profile="gpu", **DECL)
    assert cfg["lr"] == 0.2 and cfg.as_dict() == DECL["gpu"] and cfg.profile == "gpu"
    with pytest.raises(AttributeError, match="read-only"):
        cfg.n = 5
    with pytest.raises(AttributeError, match="No size 'epochs'"):
        _ = cfg.epochs  # reading an unknown size raises


def test_seed_everything_reproduces_all_generators():
    import random

    import numpy as np

    def draw():
        return random.random(), float(np.random.rand()), torch.rand(3)

    seed_everything(7)
    a = draw()
    seed_everything(7)
    b = draw()
    assert a[0] == b[0] and a[1] == b[1] and torch.equal(a[2], b[2])
    seed_everything(8)
    assert not torch.equal(draw()[2], a[2])


def test_deterministic_mode_switches_torch_to_deterministic_kernels():
    try:
        seed_everything(0, deterministic=True)
        assert torch.are_deterministic_algorithms_enabled()
    finally:
        torch.use_deterministic_algorithms(False)


def test_get_device(monkeypatch):
    monkeypatch.delenv("COURSE_DEVICE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert get_device().type in ("cpu", "mps")
    assert get_device("cpu").type == "cpu"
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        get_device("cuda")
    monkeypatch.setenv("COURSE_DEVICE", "cpu")
    assert get_device().type == "cpu"


def test_setup_prints_profile_device_and_returns_session(monkeypatch, capsys):
    monkeypatch.setenv("COURSE_PROFILE", "smoke")
    session = course_lib.setup("00_orientation")
    out = capsys.readouterr().out
    assert session.profile == "smoke" and "profile  : smoke" in out and "device   :" in out
    assert session.device == get_device()


def test_setup_prints_the_data_root_without_the_machines_folders(monkeypatch, capsys, tmp_path):
    from course_lib.files import checkout, display_path

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home" / "data").mkdir(parents=True)
    monkeypatch.setenv("COURSE_DATA", str(tmp_path / "home" / "data"))
    course_lib.setup("00_orientation")
    assert "data root: ~/data   (set COURSE_DATA to change)" in capsys.readouterr().out
    root = checkout()
    assert root is not None, "the tests run from a source checkout"
    assert display_path(root / "data" / "x.bin") == "data/x.bin"
    assert display_path(root.parent / "shared" / "data") == "../shared/data"  # beside the checkout
    assert display_path("/") == str(Path("/").resolve())  # elsewhere: as it is


def test_smoke_profile_runs_deterministically(monkeypatch):
    monkeypatch.setenv("COURSE_PROFILE", "smoke")
    try:
        course_lib.setup("00_orientation")
        assert torch.are_deterministic_algorithms_enabled()
    finally:
        torch.use_deterministic_algorithms(False)


@pytest.mark.parametrize("preset", [None, "bad", ":16:8"])
def test_deterministic_mode_on_cuda_sets_up_cublas_and_only_warns(monkeypatch, preset):
    """On a GPU (faked here) the smoke profile's deterministic mode must not stop a notebook: cuBLAS gets a
    valid workspace setting, and ops without a deterministic CUDA kernel warn instead of raising."""
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", "unset-me")  # so that monkeypatch restores the variable
    if preset is None:
        monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG")
    else:
        monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", preset)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    seed_everything(0, deterministic=True)  # the deterministic state is restored by tests/conftest.py
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == (preset if preset == ":16:8" else ":4096:8")
    assert torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled()


def test_deterministic_mode_on_cpu_raises_on_nondeterministic_ops(monkeypatch):
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # restored afterwards
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    seed_everything(0, deterministic=True)
    assert torch.are_deterministic_algorithms_enabled() and not torch.is_deterministic_algorithms_warn_only_enabled()
