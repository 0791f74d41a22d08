"""The course's one training loop, and checkpoints.

Models stay plain ``nn.Module``s; a notebook supplies a ``loss_fn(model, batch)`` that returns
the loss (or ``(loss, {"name": value, ...})`` to log more numbers) and calls::

    history = fit(model, optimizer, loss_fn, loader, steps=2_000, device=device)
    plot_history(history)

Models whose step is more than "one loss, one optimizer" (a GAN's critic and generator steps, a
CycleGAN's four networks) hand a step function to ``train_loop``, the one loop behind ``fit``. Every
loop updates with ``optimizer_step``, in the device's mixed precision (``course_lib.precision``).
"""
from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Callable, Iterable, Iterator
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
        self.step, self.seconds, self.diverged = 0, 0.0, False  # set by train_loop: steps done, training time

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
    >= 8.0, fp16 on older ones (with ``precision_policy(device).grad_scaler()``), none on CPU unless
    ``enabled=True`` (bf16)."""
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
    """Fraction of the rows of ``x`` (N, ...) whose argmax logit equals ``labels`` (N,), in eval mode
    (the model's mode is restored afterwards)."""
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

    After each optimizer step, ``update(model)`` moves every shadow weight towards the live one::

        shadow <- d * shadow + (1 - d) * weight,    d = min(decay, (1 + n) / (10 + n))

    with n the updates so far: the warm-up keeps the random initial weights from dominating short runs.
    Floating-point buffers (BatchNorm's running statistics) are averaged too; integer ones are copied.
    Averaging the last ~1 / (1 - decay) steps smooths out SGD's noise: a diffusion model samples far
    better from its EMA weights than from its last ones. ``model_copy()`` holds the averaged weights.
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
                self.shadow[k].mul_(d).add_(v.detach(), alpha=1 - d)
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
    """Load a checkpoint written by :func:`save_checkpoint` with ``weights_only=True`` (tensors and plain
    data only); a missing or unreadable file raises with the fix."""
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
            raise ValueError("The data given to the training loop yielded no batches.")


def optimizer_step(loss: torch.Tensor, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                   grad_clip: float | None = None, params: Iterable[torch.Tensor] | None = None) -> None:
    """One update: zero the gradients, backpropagate ``loss`` (scaled for fp16), clip, step.

    ``scaler`` is ``precision_policy(device).grad_scaler()``, a pass-through for bf16 and fp32. Clipping
    acts on the true (unscaled) gradients of ``params`` (default: the parameters this optimizer updates).
    """
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if grad_clip is not None:
        scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
        if params is None:
            params = [p for group in optimizer.param_groups for p in group["params"]]
        nn.utils.clip_grad_norm_(params, grad_clip)
    scaler.step(optimizer)  # fp16: skipped if a gradient overflowed
    scaler.update()


def train_loop(
    step_fn: Callable[[Iterator, int, float], dict[str, Any]],
    data: Iterable,
    *,
    steps: int | None = None,
    seconds: float | None = None,
    device: torch.device | str = "cpu",
    history: History | None = None,
    log_every: int = 10,
    desc: str = "train",
    progress: bool = True,
    start_step: int = 0,
    callback: Callable[[int], None] | None = None,
    callback_every: int | None = None,
    callback_points: int = 0,
    checkpoint: str | Path | None = None,
    checkpoint_every: int = 500,
    state: dict[str, Any] | None = None,
    on_nonfinite: str = "raise",
) -> History:
    """The course's one training loop; the model-specific part is ``step_fn``.

    ``step_fn(batches, step, progress)`` runs one training step, drawing as many batches as it needs
    from ``batches`` (an endless iterator over ``data``, each batch already on ``device``), and returns
    the numbers to log as a dict of tensors (or floats). ``progress`` in [0, 1] is the share of the
    budget used so far. The loop does the rest:

    - the budget: ``steps`` optimizer steps, or ``seconds`` of training time, or both (whichever ends
      first), with a tqdm bar;
    - logging: every ``log_every`` steps (and at the last step) the values are read into ``history`` and
      checked for inf / NaN; only then does it wait for the GPU. ``on_nonfinite``: "raise" a
      FloatingPointError, or "stop" the run and set ``history.diverged`` (for a learning-rate search);
    - ``callback(step)`` every ``callback_every`` steps, or at ``callback_points`` moments spread evenly
      over the budget; its time is not training time;
    - ``checkpoint``: resume from the file if it exists, save every ``checkpoint_every`` steps and at the
      end (atomically). ``state`` names what to save: objects with ``state_dict``/``load_state_dict``.

    ``start_step`` continues a run from that step. Returns ``history``; ``history.step`` is the number of
    steps done and ``history.seconds`` the training time of this call, during and after the run.
    """
    if steps is None and seconds is None:
        raise ValueError("train_loop needs a budget: steps=..., seconds=..., or both.")
    if (steps is not None and steps < 0) or (seconds is not None and seconds < 0):
        raise ValueError(f"train_loop: the budget cannot be negative, got steps={steps}, seconds={seconds}.")
    if on_nonfinite not in ("raise", "stop"):
        raise ValueError(f"on_nonfinite must be 'raise' or 'stop', got {on_nonfinite!r}.")
    device = torch.device(device)
    history = history if history is not None else History()
    state = state or {}
    step = start_step
    if checkpoint is not None and Path(checkpoint).is_file():
        saved = load_checkpoint(checkpoint, map_location=device)
        for name, obj in state.items():
            if name in saved:
                obj.load_state_dict(saved[name])
        history.load_state_dict(saved["history"])
        step = int(saved["step"])

    def save(at: int) -> None:
        save_checkpoint(checkpoint, step=at, history=history.state_dict(),
                        **{name: obj.state_dict() for name, obj in state.items()})

    def used(step: int, clock: float) -> float:  # share of the budget spent (a budget of 0 is spent)
        shares = [] if steps is None else [step / steps if steps > 0 else 1.0]
        return max(shares + ([] if seconds is None else [clock / seconds if seconds > 0 else 1.0]))

    batches = (to_device(b, device) for b in _cycle(data))
    by_time = steps is None
    bar = tqdm(total=100 if by_time else steps, initial=0 if by_time else step, desc=desc, disable=not progress,
               unit="%" if by_time else "it")
    finite = torch.ones((), dtype=torch.bool, device=device)  # stays True while every logged value is finite
    checked, clock, next_point, first = step, 0.0, 1, step
    history.diverged = False
    while used(step, clock) < 1:
        start = time.perf_counter()
        logged = step_fn(batches, step, used(step, clock))
        for value in logged.values():
            if isinstance(value, torch.Tensor):
                finite &= torch.isfinite(value.detach()).all()  # on the device: no waiting for the GPU here
        last = used(step + 1, clock + time.perf_counter() - start) >= 1
        if step % log_every == 0 or last:  # the only place that waits for the GPU
            if not finite.item():
                if on_nonfinite == "stop":
                    history.diverged = True
                    break
                raise FloatingPointError(
                    f"A loss became inf or NaN between steps {checked} and {step}. Lower the learning rate, "
                    "check the inputs' range, or clip gradients (grad_clip=1.0).")
            checked = step + 1
            values = {k: float(v) for k, v in logged.items()}
            history.log(step, **values)
            bar.set_postfix({k: f"{v:.4g}" for k, v in list(values.items())[:5]})  # the first five
        step, clock = step + 1, clock + time.perf_counter() - start  # on a GPU, exact at logging steps
        history.step, history.seconds = step, clock
        bar.update(int(100 * min(1.0, used(step, clock))) - bar.n if by_time else 1)
        if callback is not None and ((callback_every and step % callback_every == 0)
                                     or (callback_points and used(step, clock) >= next_point / callback_points)):
            callback(step)
            next_point += 1
        if checkpoint is not None and step % checkpoint_every == 0:
            save(step)
    bar.close()
    if checkpoint is not None and step > first:
        save(step)
    return history


def fit(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: Callable[[nn.Module, Any], torch.Tensor | tuple[torch.Tensor, dict[str, float]]],
    data: Iterable,
    *,
    steps: int | None = None,
    seconds: float | None = None,
    device: torch.device | str | None = None,
    amp: bool | None = None,
    compile: bool = False,
    grad_clip: float | None = None,
    scheduler: Any = None,
    schedule: Callable[[float], float] | None = None,
    ema: EMA | None = None,
    **loop: Any,
) -> History:
    """Train ``model`` on ``loss_fn(model, batch)`` over ``data`` (cycled as often as needed).

    ``loss_fn`` returns the loss, or ``(loss, {"name": value, ...})`` to log more numbers. Budget:
    ``steps`` and / or ``seconds``. Learning rate: ``scheduler`` (a torch scheduler, stepped after every
    step) or ``schedule(progress)``, a multiplier of each group's initial rate as a function of the share
    of the budget used (e.g. ``cosine_schedule()``; the one for a time budget). ``ema`` is updated after
    every step. ``amp``: None = the device's mixed precision (``course_lib.precision``), False = fp32,
    True = mixed precision also on a CPU (bf16). Other keywords go to :func:`train_loop`; a checkpoint
    holds the model, optimizer, scheduler, EMA and GradScaler.
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.to(device).train()
    policy = precision_policy(device, amp)
    scaler = policy.grad_scaler()  # scales the loss for fp16; a pass-through for bf16 and fp32
    step_model = torch.compile(model) if compile else model
    base_lrs = [group["lr"] for group in optimizer.param_groups]

    def step_fn(batches: Iterator, step: int, progress: float) -> dict[str, Any]:
        if schedule is not None:
            for group, lr in zip(optimizer.param_groups, base_lrs):
                group["lr"] = lr * schedule(progress)
        with policy.autocast():
            out = loss_fn(step_model, next(batches))
        loss, extra = out if isinstance(out, tuple) else (out, {})
        optimizer_step(loss, optimizer, scaler, grad_clip, model.parameters())
        if scheduler is not None:
            scheduler.step()
        if ema is not None:
            ema.update(model)
        return {"loss": loss.detach(), **extra}

    state = {"model": model, "optimizer": optimizer}
    state.update({name: obj for name, obj in (("scheduler", scheduler), ("ema", ema)) if obj is not None})
    if scaler.is_enabled():
        state["scaler"] = scaler
    return train_loop(step_fn, data, steps=steps, seconds=seconds, device=device, state=state, **loop)


def cosine_lr(step: int, total: int, warmup: int = 0, min_ratio: float = 0.1) -> float:
    """Multiplier for LambdaLR: linear warm-up, then cosine decay to ``min_ratio``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def cosine_schedule(warmup: float = 0.0, min_ratio: float = 0.1) -> Callable[[float], float]:
    """``cosine_lr`` as a function of the share of the budget used (for ``fit(schedule=...)``): warm-up
    over the first ``warmup`` of the budget, then cosine decay to ``min_ratio``, in steps of 1/1000."""
    return lambda progress: cosine_lr(int(1000 * progress), 1000, int(1000 * warmup), min_ratio)
