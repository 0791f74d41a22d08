"""Data parallelism: two CPU processes under torchrun (gloo) keep identical replicas, their loss falls,
and their weights equal one process that accumulates the same global batch."""
import os
import subprocess
import sys

import pytest
import torch

from course_lib.distributed import DDPConfig, micro_batch, train
from course_lib.train import load_checkpoint

TINY = dict(steps=6, batch_size=8, block_size=32, n_layer=2, n_head=2, n_embd=32, lr=3e-3, log_every=1)


def flags(**cfg):
    return [f"--{k.replace('_', '-')}={v}" for k, v in cfg.items()]


@pytest.fixture(scope="module")
def corpus():
    from course_lib.data import load_tiny_shakespeare
    return load_tiny_shakespeare()


def test_micro_batches_are_a_function_of_step_and_index(corpus):
    cfg = DDPConfig(**TINY)
    x, y = micro_batch(corpus.train, cfg, step=3, index=1)
    assert x.shape == y.shape == (8, 32) and torch.equal(x[:, 1:], y[:, :-1])  # y is x shifted by one
    assert torch.equal(x, micro_batch(corpus.train, cfg, 3, 1)[0])
    assert not torch.equal(x, micro_batch(corpus.train, cfg, 3, 0)[0])  # another rank / micro-batch: other windows


def test_torchrun_two_cpu_ranks(tmp_path, corpus):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          "-m", "course_lib.distributed", *flags(**TINY), f"--replica-dir={tmp_path / 'ddp'}"],
                         capture_output=True, text=True, timeout=240, env=env)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    assert "2 rank(s) x 1 x 8 windows = global batch 16" in run.stdout
    r0, r1 = (load_checkpoint(tmp_path / "ddp" / f"rank{r}.pt") for r in (0, 1))
    # 1) the replicas are identical, although each rank saw different windows
    for name, w in r0["model"].items():
        assert torch.equal(w, r1["model"][name]), f"replicas differ in {name}"
    # 2) the loss of the global batch falls
    losses = [loss for _, loss in r0["losses"]]
    assert losses[-1] < losses[0] - 0.3, losses
    # 3) DDP = one process accumulating the same 2 micro-batches per step
    single = train(DDPConfig(**TINY, grad_accum=2), corpus.train, len(corpus.chars), replica_dir=tmp_path / "one")
    one = load_checkpoint(tmp_path / "one" / "rank0.pt")["model"]
    gap = max((one[n] - w).abs().max().item() for n, w in r0["model"].items())
    assert gap < 1e-4, f"DDP and gradient accumulation disagree by {gap}"
    assert single["world_size"] == 1
    # ... and the comparison is sensitive: half the global batch gives other weights
    train(DDPConfig(**TINY), corpus.train, len(corpus.chars), replica_dir=tmp_path / "half")
    half = load_checkpoint(tmp_path / "half" / "rank0.pt")["model"]
    assert max((half[n] - w).abs().max().item() for n, w in r0["model"].items()) > 100 * max(gap, 1e-7)
