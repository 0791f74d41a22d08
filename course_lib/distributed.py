"""Data parallelism for the course GPT: one process per GPU (or CPU worker) under ``torchrun``,
with DistributedDataParallel (DDP), gradient accumulation and mixed precision.

DDP (Li et al., 2020) averages the gradients of P ranks, each on K micro-batches of B windows: the
gradient of one global batch of P*K*B windows, so replicas that start from the same
weights stay identical. Why that holds, and
when FSDP (Zhao et al., 2023) is needed instead, is derived in notebook 16.

Usage::

    python -m course_lib.distributed --steps 500                        # one process
    torchrun --nproc_per_node=2 -m course_lib.distributed --steps 500   # two processes: DDP
    torchrun --nproc_per_node=4 -m course_lib.distributed --amp --out runs/gpt.pt

Determinism: micro-batch g = rank * K + k of step s is a pure function of (seed, s, g), so P ranks
with K micro-batches see the same global batch as one process with P*K (a test checks the weights agree).
"""
from __future__ import annotations

import argparse
import contextlib
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from .gpt import GPT, GPTConfig
from .precision import precision_policy
from .train import save_checkpoint


@dataclass
class DDPConfig:
    steps: int = 200  # optimizer steps
    batch_size: int = 16  # windows per micro-batch, per rank
    grad_accum: int = 1  # micro-batches per rank and step (K)
    block_size: int = 64  # characters per window
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    lr: float = 3e-3
    seed: int = 0
    # mixed precision (course_lib.precision: bf16, or fp16 + GradScaler on older GPUs; weights stay fp32)
    amp: bool = False
    log_every: int = 20


def init_process() -> tuple[int, int, torch.device]:
    """(rank, world size, device). Under torchrun (WORLD_SIZE > 1) join the process group:
    NCCL on GPUs, gloo on CPUs. A plain ``python`` run is rank 0 of 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return rank, world, device


def micro_batch(data: torch.Tensor, cfg: DDPConfig, step: int, index: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``index``-th micro-batch of ``step``: (x, y), each (B, T), y shifted by one character."""
    g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step * 10_007 + index)
    starts = torch.randint(len(data) - cfg.block_size - 1, (cfg.batch_size,), generator=g)  # (B,)
    offsets = torch.arange(cfg.block_size + 1)  # (T + 1,)
    windows = data[starts[:, None] + offsets]  # (B, T + 1)
    return windows[:, :-1], windows[:, 1:]


def train(cfg: DDPConfig, data: torch.Tensor, vocab_size: int, replica_dir: str | Path | None = None,
          out: str | Path | None = None) -> dict:
    """Train a GPT on ``data`` (N,) token ids, data-parallel over however many ranks are running.

    Returns, on every rank, {"losses": [(step, global loss)], "seconds", "world_size"}. ``replica_dir``:
    every rank saves its final weights there as ``rank{r}.pt``; ``out``: rank 0 saves a checkpoint.
    With several ranks it destroys the process group before returning.
    """
    rank, world, device = init_process()
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank (DDP would copy rank 0's anyway)
    model = GPT(GPTConfig(vocab_size=vocab_size, block_size=cfg.block_size, n_layer=cfg.n_layer,
                          n_head=cfg.n_head, n_embd=cfg.n_embd)).to(device)
    ddp = DDP(model) if world > 1 else model
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    policy = precision_policy(device, enabled=cfg.amp)
    scaler = policy.grad_scaler()  # a pass-through unless fp16
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    losses, start = [], time.perf_counter()
    for step in range(cfg.steps):
        total = torch.zeros((), device=device)
        for k in range(cfg.grad_accum):
            x, y = (t.to(device) for t in micro_batch(data, cfg, step, rank * cfg.grad_accum + k))
            last = k == cfg.grad_accum - 1
            # all-reduce on the last one only
            sync = ddp.no_sync() if (world > 1 and not last) else contextlib.nullcontext()
            with sync, policy.autocast():
                _, loss = ddp(x, y)
            scaler.scale(loss / cfg.grad_accum).backward()  # DDP averages over ranks, we average over micro-batches
            total += loss.detach() / cfg.grad_accum
        scaler.unscale_(optimizer)  # clip the true gradients
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        if step % cfg.log_every == 0 or step == cfg.steps - 1:
            if world > 1:
                dist.all_reduce(total, op=dist.ReduceOp.AVG)  # the loss of the global batch
            losses.append((step, total.item()))
            if rank == 0:
                print(f"step {step:5d}  loss {total.item():.4f}  ({world} rank(s) x {cfg.grad_accum} x "
                      f"{cfg.batch_size} windows = global batch {world * cfg.grad_accum * cfg.batch_size})", flush=True)
    if device.type == "cuda":
        torch.cuda.synchronize(device)  # the clock counts finished GPU work, not queued work
    seconds = time.perf_counter() - start
    if replica_dir is not None:
        Path(replica_dir).mkdir(parents=True, exist_ok=True)
        save_checkpoint(Path(replica_dir) / f"rank{rank}.pt", model=model.state_dict(), losses=losses, seconds=seconds)
    if out is not None and rank == 0:
        save_checkpoint(out, model=model.state_dict(), config=asdict(cfg), losses=losses, world_size=world)
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return {"losses": losses, "seconds": seconds, "world_size": world}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="torchrun --nproc_per_node=N -m course_lib.distributed",
                                     description="Train the course GPT on Tiny Shakespeare, data-parallel.")
    for name, value in asdict(DDPConfig()).items():
        if isinstance(value, bool):
            parser.add_argument(f"--{name.replace('_', '-')}", action="store_true")
        else:
            parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)
    parser.add_argument("--replica-dir", default=None, help="every rank saves its final weights here")
    parser.add_argument("--out", default=None, help="rank 0 saves a checkpoint here")
    args = vars(parser.parse_args(argv))
    replica_dir, out = args.pop("replica_dir"), args.pop("out")
    cfg = DDPConfig(**args)
    from .data import load_tiny_shakespeare

    corpus = load_tiny_shakespeare()
    result = train(cfg, corpus.train, len(corpus.chars), replica_dir=replica_dir, out=out)
    if int(os.environ.get("RANK", "0")) == 0:
        first, last = result["losses"][0][1], result["losses"][-1][1]
        print(f"done: loss {first:.3f} -> {last:.3f} in {result['seconds']:.2f} s on {result['world_size']} rank(s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
