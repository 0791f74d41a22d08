"""A small, readable training loop and checkpoints.

Models stay plain ``nn.Module``s; a notebook supplies a ``loss_fn(model, batch)`` that returns
the loss (or ``(loss, {"name": value, ...})`` to log more numbers) and calls::

    history = fit(model, optimizer, loss_fn, loader, steps=2_000, device=device)
    plot_history(history)

``fit`` shows a tqdm progress bar, keeps a loss history, trains in the device's mixed precision
(``course_lib.precision``: bf16 on recent GPUs, fp16 with a GradScaler on older ones, fp32 on CPU),
optionally ``torch.compile``s the model, and with ``checkpoint=path`` saves and resumes
training (model, optimizer, step and history) with atomic writes and
``torch.load(weights_only=True)``. It waits for the GPU only at logging steps: the loss is read,
and checked for inf / NaN, every ``log_every`` steps, not after every step.
"""
from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from .checks import check_labels
from .files import atomic_write
from .precision import precision_policy


class History:
    """Metric name -> list of (step, value); plain Python data, so it checkpoints safely."""

    def __init__(self) -> None:
        self.records: dict[str, list[tuple[int, float]]] = {}

    def log(self, step: int, **metrics: float) -> None:
        for name, value in metrics.items():
            self.records.setdefault(name, []).append((int(step), float(value)))

    def steps(self, name: str) -> list[int]:
        return [s for s, _ in self.records[name]]

    def values(self, name: str) -> list[float]:
        return [v for _, v in self.records[name]]

    def last(self, name: str) -> float:
        return self.records[name][-1][1]

    def __contains__(self, name: str) -> bool:
        return name in self.records

    def state_dict(self) -> dict[str, list[list[float]]]:
        return {k: [[s, v] for s, v in rows] for k, rows in self.records.items()}

    def load_state_dict(self, state: dict[str, list[list[float]]]) -> None:
        self.records = {k: [(int(s), float(v)) for s, v in rows] for k, rows in state.items()}

    def __repr__(self) -> str:
        return "History(" + ", ".join(f"{k}: {len(v)} points" for k, v in self.records.items()) + ")"


def to_device(batch: Any, device: torch.device) -> Any:
    """Move a tensor, or tensors nested in tuples/lists/dicts, to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(b, device) for b in batch)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    return batch


def autocast(device: torch.device, enabled: bool | None = None):
    """Autocast as ``course_lib.precision`` decides for ``device``: bf16 on GPUs of compute capability
    >= 8.0, fp16 on older ones (train those with ``precision_policy(device).grad_scaler()``), none
    on CPU unless asked (``enabled=True``: bf16)."""
    return precision_policy(device, enabled).autocast()


@contextlib.contextmanager
def eval_mode(model):
    """Run a block with ``model`` in eval mode (dropout off, BatchNorm on running statistics), then
    restore the mode it had. Plain functions (no ``eval`` method) pass through unchanged."""
    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    try:
        yield model
    finally:
        if was_training:
            model.train()


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, labels: torch.Tensor, batch_size: int = 500) -> float:
    """Fraction of the rows of ``x`` (N, ...) whose argmax logit equals ``labels`` (N,), batch by batch,
    in eval mode (the model's mode is restored afterwards)."""
    device = next(model.parameters()).device
    labels = check_labels(torch.as_tensor(labels).cpu(), len(x))  # (N,)
    correct = 0
    with eval_mode(model):
        for start in range(0, len(x), batch_size):
            pred = model(x[start : start + batch_size].to(device)).argmax(1).cpu()  # (B,)
            correct += int((pred == labels[start : start + batch_size]).sum())
    return correct / len(x)


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters of ``model`` (only those with requires_grad if ``trainable_only``). A tensor
    shared by several modules (tied weights, e.g. a GPT's ``lm_head`` and ``wte``) is counted once."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def count_flops(fn: Callable[[], Any]) -> int:
    """FLOPs of everything ``fn()`` runs, forward and backward, counted by torch's FlopCounterMode: matrix
    products and convolutions at 2 FLOPs per multiply-add; element-wise work and optimizer updates count 0."""
    from torch.utils.flop_counter import FlopCounterMode  # imported here: it takes a while (it loads triton)

    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


class EMA:
    """An exponential moving average of a model's weights (Polyak averaging), for sampling.

    After each optimizer step, ``update(model)`` moves every shadow weight a step towards the live one::

        shadow <- d * shadow + (1 - d) * weight,    d = min(decay, (1 + n) / (10 + n))

    where n counts the updates so far. The warm-up term keeps the average from being dominated by the
    random initial weights in short runs. Floating-point buffers (BatchNorm's running mean and variance)
    are averaged like the weights; integer buffers (its batch counter) are copied. The
    average of the last ~1 / (1 - decay) steps smooths out the noise of SGD, which matters most for
    generators: a diffusion model sampled from its EMA weights gives far better samples than the same
    run's last weights. ``model_copy()`` returns a new model holding the averaged weights.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must lie in [0, 1), got {decay}.")
        self.decay = decay
        self.updates = 0
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for k, v in model.state_dict().items():
            if v.is_floating_point():
                self.shadow[k].mul_(d).add_(v.detach(), alpha=1 - d)  # shadow = d shadow + (1 - d) w
            else:
                self.shadow[k].copy_(v)
        self.updates += 1

    def model_copy(self, model: nn.Module) -> nn.Module:
        """A deep copy of ``model`` with the averaged weights, in eval mode."""
        averaged = copy.deepcopy(model)
        averaged.load_state_dict(self.shadow)
        return averaged.eval()

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "updates": self.updates, "shadow": self.shadow}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.decay, self.updates = float(state["decay"]), int(state["updates"])
        self.shadow = {k: v.clone() for k, v in state["shadow"].items()}


def save_checkpoint(path: str | Path, **state: Any) -> Path:
    """Save ``state`` (state_dicts, ints, lists...) atomically: temp file, then rename."""
    path = Path(path)
    with atomic_write(path) as f:
        torch.save(state, f)
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` (tensors and plain data only)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No checkpoint at {path}. Train first, or check the path.")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises several types for truncated or foreign files
        raise RuntimeError(
            f"Could not read checkpoint {path}: {err}\nFix: delete the file and train again."
        ) from err


def _cycle(data: Iterable):
    while True:
        empty = True
        for batch in data:
            empty = False
            yield batch
        if empty:
            raise ValueError("The data given to fit() yielded no batches.")


def fit(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: Callable[[nn.Module, Any], torch.Tensor | tuple[torch.Tensor, dict[str, float]]],
    data: Iterable,
    *,
    steps: int,
    device: torch.device | str | None = None,
    history: History | None = None,
    log_every: int = 10,
    amp: bool | None = None,
    compile: bool = False,
    grad_clip: float | None = None,
    scheduler: Any = None,
    checkpoint: str | Path | None = None,
    checkpoint_every: int = 500,
    progress: bool = True,
    desc: str = "train",
    ema: EMA | None = None,
    start_step: int = 0,
) -> History:
    """Train until optimizer step ``steps`` over ``data`` (cycled as often as needed).

    With ``checkpoint`` set, an existing checkpoint is resumed from (model, optimizer,
    scheduler, EMA, step, history) and a new one is written every ``checkpoint_every`` steps
    and at the end. ``ema`` (an :class:`EMA`) is updated after every optimizer step.
    ``start_step`` continues a run from that step (for callers that keep the optimizer and
    scheduler themselves and train in segments). ``amp``: None = the device's mixed precision
    (``course_lib.precision``), False = fp32, True = mixed precision also on a CPU (bf16).
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.to(device)
    policy = precision_policy(device, amp)
    scaler = policy.grad_scaler()  # scales the loss for fp16; a pass-through for bf16 and fp32
    history = history if history is not None else History()
    start = start_step
    if checkpoint is not None and Path(checkpoint).is_file():
        state = load_checkpoint(checkpoint, map_location=device)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None and "scheduler" in state:
            scheduler.load_state_dict(state["scheduler"])
        if ema is not None and "ema" in state:
            ema.load_state_dict(state["ema"])
        if scaler.is_enabled() and "scaler" in state:
            scaler.load_state_dict(state["scaler"])
        history.load_state_dict(state["history"])
        start = int(state["step"])

    def save(step: int) -> None:
        state = dict(model=model.state_dict(), optimizer=optimizer.state_dict(), step=step,
                     history=history.state_dict())
        if scheduler is not None:
            state["scheduler"] = scheduler.state_dict()
        if ema is not None:
            state["ema"] = ema.state_dict()
        if scaler.is_enabled():
            state["scaler"] = scaler.state_dict()
        save_checkpoint(checkpoint, **state)

    step_model = torch.compile(model) if compile else model
    model.train()
    batches = _cycle(data)
    bar = tqdm(range(start, steps), desc=desc, disable=not progress, initial=start, total=steps)
    finite = torch.ones((), dtype=torch.bool, device=device)  # stays True while every loss is finite
    checked = start  # the first step not yet checked
    for step in bar:
        batch = to_device(next(batches), device)
        with policy.autocast():
            out = loss_fn(step_model, batch)
        loss, extra = out if isinstance(out, tuple) else (out, {})
        finite &= torch.isfinite(loss.detach())  # on the device: no waiting for the GPU here
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if grad_clip is not None:
            scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        scaler.step(optimizer)
        scaler.update()
        if scheduler is not None:
            scheduler.step()
        if ema is not None:
            ema.update(model)
        if step % log_every == 0 or step == steps - 1:  # the only place that waits for the GPU
            if not finite.item():
                raise FloatingPointError(
                    f"The loss became inf or NaN between steps {checked} and {step}. Lower the learning rate, "
                    "check the inputs' range, or clip gradients (grad_clip=1.0)."
                )
            checked = step + 1
            logged = {"loss": loss.item(), **{k: float(v) for k, v in extra.items()}}
            history.log(step, **logged)
            bar.set_postfix({k: f"{v:.4g}" for k, v in logged.items()})
        if checkpoint is not None and (step + 1) % checkpoint_every == 0:
            save(step + 1)
    if checkpoint is not None and start < steps:
        save(steps)
    return history


def cosine_lr(step: int, total: int, warmup: int = 0, min_ratio: float = 0.1) -> float:
    """Multiplier for LambdaLR: linear warm-up, then cosine decay to ``min_ratio``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
