"""What the first cell of every notebook calls: profile, device, seed, clock."""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from . import results
from .data.core import DATA_ENV, data_root
from .device import describe_device, get_device, seed_everything
from .files import display_path
from .profiles import DRY_RUN_ENV, PROFILE_ENV, active_profile, dry_run_requested


@dataclass(frozen=True)
class Session:
    notebook: str
    profile: str
    device: torch.device
    data_root: Path


def on_colab() -> bool:
    return "google.colab" in sys.modules


def setup(notebook: str, seed: int = 0, deterministic: bool | None = None) -> Session:
    """Seed everything, start the notebook's wall clock, print where and how it runs.

    ``deterministic`` (default: on in the ``smoke`` profile, which the tests use) also makes
    torch pick deterministic kernels, so test runs repeat exactly on the same machine.
    """
    results.start_clock()
    profile = active_profile()
    device = get_device()
    if deterministic is None:
        deterministic = profile == "smoke"
    seed_everything(seed, deterministic=deterministic)
    root = data_root()
    print(f"notebook : {notebook}")
    print(f"profile  : {profile}   (set {PROFILE_ENV}=smoke|cpu|gpu to change)")
    print(f"device   : {describe_device(device)}")
    shown = display_path(root)
    where = "" if shown.startswith("~") or Path(shown).is_absolute() else "relative to the course folder; "
    print(f"data root: {shown}   ({where}set {DATA_ENV} to change)")
    print(f"torch    : {torch.__version__}")
    if on_colab() and device.type != "cuda":
        print("hint     : this Colab runtime has no GPU. For the gpu profile choose "
              "Runtime > Change runtime type > GPU, then run this cell again.")
    if dry_run_requested():
        print(f"dry run  : {DRY_RUN_ENV} is set: the gpu profile's shapes with the notebook's capped steps; "
              f"the record goes to a temporary folder")
    elif profile == "gpu" and device.type != "cuda":
        print("warning  : the gpu profile is selected but no GPU was found; this will be slow. "
              f"Set {PROFILE_ENV}=cpu for laptop-sized runs.")
    return Session(notebook=notebook, profile=profile, device=device, data_root=root)
