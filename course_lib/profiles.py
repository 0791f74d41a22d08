"""Run profiles: one switch that scales every notebook.

- ``smoke``: tests and CI, each notebook in under a minute on 2 CPU cores.
- ``cpu``: a laptop, each notebook in under 10 minutes with recognizable results.
- ``gpu``: one GPU, each notebook in about 15 minutes on a free Colab T4 (estimated until measured).

The switch is the environment variable ``COURSE_PROFILE``; without it the profile is ``gpu`` when CUDA
is available, else ``cpu``. A notebook declares its sizes for all three profiles in one cell, the
shared ones once in ``common``, and reads the active one::

    cfg = sizes(
        common=dict(lr=3e-4, batch_size=128),
        smoke=dict(n_train=2_000, epochs=1),
        cpu=dict(n_train=60_000, epochs=5),
        gpu=dict(n_train=60_000, epochs=30),
        dry_run=dict(n_train=512, epochs=1),
    )
    cfg.epochs  # the value for the active profile

A dry run (``COURSE_DRY_RUN=1`` with ``COURSE_PROFILE=gpu``) runs a notebook on a CPU at the ``gpu``
profile's shapes (widths, depths, batch sizes) with its steps, samples and sweeps capped by ``dry_run``,
so that size-dependent code is exercised before a GPU sees it.
"""
from __future__ import annotations

import os
from types import MappingProxyType
from typing import Any

PROFILE_ENV = "COURSE_PROFILE"
DRY_RUN_ENV = "COURSE_DRY_RUN"
PROFILES = ("smoke", "cpu", "gpu")


class ProfileError(ValueError):
    """An unknown profile name, or sizes that do not cover every profile alike."""


def active_profile() -> str:
    """The profile in force: ``COURSE_PROFILE`` if set, else ``gpu`` with CUDA, else ``cpu``."""
    name = os.environ.get(PROFILE_ENV, "").strip().lower()
    if not name:
        import torch

        return "gpu" if torch.cuda.is_available() else "cpu"
    if name not in PROFILES:
        raise ProfileError(
            f"Unknown profile {name!r} in {PROFILE_ENV}. Valid profiles: {', '.join(PROFILES)}.\n"
            f"Fix: `export {PROFILE_ENV}=cpu` (or smoke / gpu), or unset it to choose automatically."
        )
    return name


def dry_run_requested() -> bool:
    """True when ``COURSE_DRY_RUN`` is set to anything but "" or "0"."""
    return os.environ.get(DRY_RUN_ENV, "").strip() not in ("", "0")


class Sizes:
    """Read-only attribute access to one profile's sizes (``cfg.epochs``, ``cfg['epochs']``)."""

    def __init__(self, profile: str, values: dict[str, Any], dry_run: bool = False):
        object.__setattr__(self, "profile", profile)
        object.__setattr__(self, "dry_run", dry_run)  # gpu shapes, capped steps (COURSE_DRY_RUN)
        object.__setattr__(self, "_values", MappingProxyType(dict(values)))

    def __getattr__(self, key: str) -> Any:
        try:
            return self._values[key]
        except KeyError:
            raise AttributeError(f"No size {key!r} in profile {self.profile!r}; "
                                 f"known: {sorted(self._values)}") from None

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __setattr__(self, key, value):
        raise AttributeError("Sizes are read-only: change them in the notebook's sizes(...) cell.")

    def as_dict(self) -> dict[str, Any]:
        return dict(self._values)

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" for k, v in self._values.items())
        return f"Sizes[{self.profile}{', dry run' if self.dry_run else ''}]({inner})"


def sizes(profile: str | None = None, common: dict[str, Any] | None = None,
          dry_run: dict[str, Any] | None = None, **per_profile: dict[str, Any]) -> Sizes:
    """The active profile's sizes, from one declaration covering ``smoke``, ``cpu`` and ``gpu``.

    A key may be in ``common`` or in the profiles, not both. After merging, every profile must name the
    same keys, so a size never exists in one profile only. ``dry_run`` is used only in a dry run.
    """
    missing = [p for p in PROFILES if p not in per_profile]
    extra = [p for p in per_profile if p not in PROFILES]
    if missing or extra:
        raise ProfileError(
            f"sizes() needs exactly the profiles {', '.join(PROFILES)}; "
            f"missing: {missing or 'none'}, unknown: {extra or 'none'}."
        )
    not_dicts = {p: type(v).__name__ for p, v in per_profile.items() if not isinstance(v, dict)}
    if not_dicts:
        raise ProfileError(f"sizes() takes one dict per profile, e.g. smoke=dict(steps=10, ...); got {not_dicts}.")
    common = {} if common is None else common
    if not isinstance(common, dict):
        raise ProfileError(f"sizes(common=...) takes a dict, e.g. common=dict(lr=1e-3); got {type(common).__name__}.")
    for p, v in per_profile.items():
        both = sorted(set(common) & set(v))
        if both:
            raise ProfileError(
                f"Profile {p!r} sets {both}, which common= sets too; "
                f"keep a size in common= (same in every profile) or in each profile, not both."
            )
    per_profile = {p: {**common, **v} for p, v in per_profile.items()}
    keys = {p: set(v) for p, v in per_profile.items()}
    reference = keys["smoke"]
    for p, k in keys.items():
        if k != reference:
            raise ProfileError(
                f"Profile {p!r} declares keys {sorted(k)} but 'smoke' declares {sorted(reference)}; "
                f"every profile must set the same sizes."
            )
    if dry_run is not None and not set(dry_run) <= reference:
        raise ProfileError(f"dry_run= caps sizes the profiles do not declare: {sorted(set(dry_run) - reference)}.")
    if profile is None:
        profile = active_profile()
    elif profile not in PROFILES:
        raise ProfileError(f"Unknown profile {profile!r}. Valid profiles: {', '.join(PROFILES)}.")
    if not dry_run_requested():
        return Sizes(profile, per_profile[profile])
    if profile != "gpu":
        raise ProfileError(f"{DRY_RUN_ENV} runs the gpu profile's shapes, but the profile is {profile!r}. "
                           f"Fix: `export {PROFILE_ENV}=gpu`, or unset {DRY_RUN_ENV}.")
    if dry_run is None:
        raise ProfileError(f"{DRY_RUN_ENV} is set, but this notebook's sizes() declares no dry_run=dict(...) caps. "
                           f"Fix: unset {DRY_RUN_ENV}, or cap its steps and samples in dry_run=.")
    return Sizes(profile, {**per_profile["gpu"], **dry_run}, dry_run=True)
