"""Small 2D datasets made on the fly, for models you can watch learn in seconds."""
from __future__ import annotations

import math

import torch


def toy_2d(name: str, n: int, generator: torch.Generator | None = None, noise: float = 0.05) -> torch.Tensor:
    """``n`` points shaped (n, 2) from a named 2D distribution.

    - ``spirals``: three interleaved spiral arms (hard for a few Gaussians, easy for many);
    - ``ring``: eight tight Gaussians on a circle (the classic GAN mode-collapse test);
    - ``moons``: two interleaving half circles.
    """
    g = generator
    if name == "spirals":
        arm = torch.randint(0, 3, (n,), generator=g)  # (n,)
        r = torch.rand(n, generator=g).sqrt()  # (n,) radius in [0, 1]
        theta = 3.0 * r + arm * (2 * math.pi / 3)  # (n,) angle winds with radius
        x = torch.stack([r * torch.cos(theta), r * torch.sin(theta)], dim=1)
    elif name == "ring":
        k = torch.randint(0, 8, (n,), generator=g).float()
        angle = k * (2 * math.pi / 8)
        x = torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)
    elif name == "moons":
        which = torch.randint(0, 2, (n,), generator=g)
        t = torch.rand(n, generator=g) * math.pi
        upper = torch.stack([torch.cos(t), torch.sin(t)], dim=1)
        lower = torch.stack([1 - torch.cos(t), 0.5 - torch.sin(t)], dim=1)
        x = torch.where(which[:, None] == 0, upper, lower) - torch.tensor([0.5, 0.25])
    else:
        raise ValueError(f"Unknown toy dataset {name!r}; choose 'spirals', 'ring' or 'moons'.")
    return x + noise * torch.randn(n, 2, generator=g)
