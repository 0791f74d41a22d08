"""Device choice and reproducibility."""
from __future__ import annotations

import os
import random

import numpy as np
import torch


def get_device(prefer: str | None = None) -> torch.device:
    """CUDA if available, else Apple's MPS, else CPU. ``prefer`` (or ``COURSE_DEVICE``) overrides."""
    prefer = prefer or os.environ.get("COURSE_DEVICE")
    if prefer:
        device = torch.device(prefer)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(
                f"Device {prefer!r} was asked for but CUDA is not available here.\n"
                "Fix: unset COURSE_DEVICE to choose automatically, or on Colab pick "
                "Runtime > Change runtime type > GPU."
            )
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def describe_device(device: torch.device | None = None) -> str:
    """A short human description, e.g. ``cuda (NVIDIA H100)`` or ``cpu (2 threads)``."""
    device = device or get_device()
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    if device.type == "cpu":
        return f"cpu ({torch.get_num_threads()} threads)"
    return device.type


def seed_everything(seed: int = 0, deterministic: bool = False) -> torch.Generator:
    """Seed Python, NumPy and torch (all devices); return a seeded CPU generator.

    ``deterministic=True`` also asks torch for deterministic kernels (slower; the tests use it so that
    reruns agree bit for bit on one machine). On CUDA torch only warns for an operation without one (e.g.
    nearest-neighbour upsampling's backward), and such a run may differ in the last bits.
    """
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
    if deterministic:
        # cuBLAS repeats its matrix products only with a fixed workspace; it reads this variable when it starts
        # (at the process's first CUDA matrix product), and torch raises on any other value
        if os.environ.get("CUBLAS_WORKSPACE_CONFIG") not in (":4096:8", ":16:8"):
            os.environ["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"
        torch.use_deterministic_algorithms(True, warn_only=torch.cuda.is_available())
        torch.backends.cudnn.benchmark = False
    return torch.Generator().manual_seed(seed)
