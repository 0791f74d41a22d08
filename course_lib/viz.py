"""Figures the notebooks share: image grids, loss curves, side-by-side rows, animations."""
from __future__ import annotations

from collections.abc import Callable, Sequence

import matplotlib.pyplot as plt
import torch
from matplotlib import animation
from torchvision.utils import make_grid

from .train import History


def _grid(images: torch.Tensor, nrow: int, value_range: tuple[float, float]) -> torch.Tensor:
    images = images.detach().float().cpu()
    if images.dim() == 3:  # (N, H, W) -> (N, 1, H, W)
        images = images.unsqueeze(1)
    if images.dim() != 4:
        raise ValueError(f"Expected images shaped (N, C, H, W) or (N, H, W), got {tuple(images.shape)}.")
    lo, hi = value_range
    images = ((images - lo) / (hi - lo)).clamp(0, 1)
    return make_grid(images, nrow=nrow, padding=2, pad_value=1.0)  # (3, H', W')


def show_images(images: torch.Tensor, nrow: int = 8, title: str | None = None, ax=None,
                value_range: tuple[float, float] = (0.0, 1.0)):
    """Show a batch of images as one grid; returns the matplotlib Axes."""
    grid = _grid(images, nrow, value_range)
    if ax is None:
        n_rows = (len(images) + nrow - 1) // nrow
        _, ax = plt.subplots(figsize=(min(12, 1.1 * nrow), 1.1 * n_rows + 0.4))
    ax.imshow(grid.permute(1, 2, 0).numpy())
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    return ax


def side_by_side(rows: dict[str, torch.Tensor], n: int = 8, value_range: tuple[float, float] = (0.0, 1.0)):
    """One labelled row per entry, e.g. ``{"noisy": x_noisy, "restored": x_hat, "clean": x}``."""
    fig, axes = plt.subplots(len(rows), 1, figsize=(1.1 * n, 1.3 * len(rows)), squeeze=False)
    for ax, (label, images) in zip(axes[:, 0], rows.items()):
        ax.imshow(_grid(images[:n], n, value_range).permute(1, 2, 0).numpy())
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel(label, rotation=0, ha="right", va="center")
    fig.tight_layout()
    return fig


def plot_history(history: History | dict[str, Sequence[float]], keys: Sequence[str] | None = None,
                 ax=None, logy: bool = False, title: str | None = None):
    """Loss curves from a :class:`History` (x = step) or a dict of value lists (x = index)."""
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.5))
    if isinstance(history, History):
        keys = keys or list(history.records)
        for k in keys:
            ax.plot(history.steps(k), history.values(k), label=k)
        ax.set_xlabel("step")
    else:
        keys = keys or list(history)
        for k in keys:
            ax.plot(list(history[k]), label=k)
        ax.set_xlabel("epoch")
    if logy:
        ax.set_yscale("log")
    ax.legend()
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title)
    return ax


def animate(frames: Sequence, draw: Callable | None = None, interval: int = 200,
            titles: Sequence[str] | None = None, figsize=(4, 4), dpi: int = 72):
    """An inline Jupyter animation (HTML with play controls) of ``frames``.

    Each frame is a batch of images, drawn as a grid, unless ``draw(ax, frame)`` draws it (e.g. a 2D
    scatter). Frames are embedded as PNGs at ``dpi``: a dozen or two keep the notebook small.
    """
    from IPython.display import HTML

    fig, ax = plt.subplots(figsize=figsize, dpi=dpi)

    def update(i):
        ax.clear()
        if draw is None:
            show_images(frames[i], ax=ax)
        else:
            draw(ax, frames[i])
        if titles is not None:
            ax.set_title(titles[i])
        return []

    anim = animation.FuncAnimation(fig, update, frames=len(frames), interval=interval, blit=False)
    html = HTML(anim.to_jshtml(default_mode="once"))
    plt.close(fig)
    return html
