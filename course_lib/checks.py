"""The course's image format, and the input checks that its modules share.

Each check returns its input (as a tensor) or raises a ValueError: what was expected, what came, any fix.
Value checks (image or label range) wait for a GPU: run them once, before a loop; shape checks are free.
"""
from __future__ import annotations

import torch

IMAGE_SHAPE = (1, 28, 28)  # (C, H, W) of an MNIST or Fashion-MNIST image
NUM_CLASSES = 10  # classes of MNIST, Fashion-MNIST and the spoken digits


def check_choice(value, choices, what: str):
    """``value`` if it is one of ``choices``: ``check_choice(kind, LOSS_KINDS, "GAN loss kind")``."""
    if value not in choices:
        raise ValueError(f"Unknown {what} {value!r}; choose one of {', '.join(map(str, choices))}.")
    return value


def check_images(images, name: str = "images", shape: tuple[int, ...] = IMAGE_SHAPE,
                 unit_range: bool = False) -> torch.Tensor:
    """A set of images as a float tensor (N, *shape); with ``unit_range``, N >= 1 and values in [0, 1]."""
    images = torch.as_tensor(images)
    expected = f"expected float images (N, {', '.join(map(str, shape))})"
    expected += " with values in [0, 1]" if unit_range else ""
    if images.ndim != 1 + len(shape) or tuple(images.shape[1:]) != tuple(shape):
        raise ValueError(f"{name}: {expected}, got shape {tuple(images.shape)}.")
    if not images.is_floating_point():
        raise ValueError(f"{name}: {expected}, got dtype {images.dtype} (convert with x.float() / 255).")
    if unit_range:
        if images.shape[0] == 0:
            raise ValueError(f"{name}: {expected}, got no images.")
        lo, hi = images.min().item(), images.max().item()
        if not (lo >= -1e-3 and hi <= 1 + 1e-3):  # also catches NaN
            raise ValueError(f"{name}: {expected}, got values in [{lo:.4g}, {hi:.4g}]. "
                             "If your model outputs [-1, 1], map it with (x + 1) / 2; clamp with x.clamp(0, 1).")
    return images


def check_image_batch(x: torch.Tensor, who: str, shape: tuple, multiple: int = 1, what: str = "images"):
    """``x`` if it is a batch (B, *shape): an int in ``shape`` must match, a name ("H", "h") stands for
    any size divisible by ``multiple``. Reads only the shape: a model's forward can run it every step."""
    if x.ndim != 1 + len(shape) or any(n % multiple if isinstance(s, str) else n != s
                                       for s, n in zip(shape, x.shape[1:])):
        names = [s for s in shape if isinstance(s, str)]
        rule = f" with {' and '.join(names)} divisible by {multiple}" if multiple > 1 else ""
        hint = (" (Add a channel dim with x[:, None].)" if x.ndim == len(shape) else
                " (Pad or crop the image.)" if x.ndim == 1 + len(shape) and multiple > 1 else "")
        raise ValueError(f"{who} expects {what} of shape (B, {', '.join(map(str, shape))}){rule}, "
                         f"got {tuple(x.shape)}.{hint}")
    return x


def check_labels(labels, n: int, name: str = "labels", num_classes: int | None = None,
                 values: bool = True) -> torch.Tensor:
    """n class labels as int64 (n,), in [0, num_classes) (any >= 0 when None). ``values=False`` checks
    only the shape and dtype, for a GPU tensor in a loop."""
    labels = torch.as_tensor(labels)
    allowed = f"in [0, {num_classes})" if num_classes is not None else ">= 0"
    expected = f"{name}: expected {n} integer labels {allowed}, shape ({n},)"
    if labels.shape != (n,) or labels.is_floating_point():
        raise ValueError(f"{expected}; got {labels.dtype} of shape {tuple(labels.shape)}.")
    if values and n:
        lo, hi = int(labels.min()), int(labels.max())
        if lo < 0 or (num_classes is not None and hi >= num_classes):
            raise ValueError(f"{expected}; got values in [{lo}, {hi}].")
    return labels.long()


def check_tokens(ids: torch.Tensor, who: str, length: str = "T") -> torch.Tensor:
    """``ids`` if they are token ids (B, length) of an integer dtype."""
    if ids.dim() != 2 or ids.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"{who} must be token ids of shape (B, {length}) and an integer dtype, "
                         f"got shape {tuple(ids.shape)} and dtype {ids.dtype}.")
    return ids


def check_timesteps(t, batch: int, who: str, device: torch.device | str | None = None) -> torch.Tensor:
    """Diffusion steps as a tensor (batch,) on ``device``; one int (or 0-d tensor) stands for the whole batch."""
    t = torch.as_tensor(t, device=device)
    if t.ndim == 0:
        t = t.expand(batch)
    if t.shape != (batch,):
        raise ValueError(f"{who} expects t of shape ({batch},) or a single int, got {tuple(t.shape)}.")
    return t


__all__ = ["IMAGE_SHAPE", "NUM_CLASSES", "check_choice", "check_images", "check_image_batch", "check_labels",
           "check_tokens", "check_timesteps"]
