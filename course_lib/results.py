"""Results records: each notebook ends by writing its headline numbers to ``results/``.

One JSON file per notebook and profile, ``results/<notebook>/<profile>.json``::

    {"notebook": "03_vae", "profile": "cpu", "device": "cpu (2 threads)",
     "wall_time_s": 412.7, "commit": "abc1234", "created": "2026-11-24T10:00:00Z",
     "metrics": {"test_neg_elbo_nats": 98.4}}

Metric names are snake_case and carry their unit or kind (``_nats``, ``_accuracy``, ``_s``...).
``COURSE_RESULTS`` redirects the folder (the tests use a temporary one, so smoke runs never touch
the committed records). ``scripts/update_readme.py`` builds the README's tables from these files.
"""
from __future__ import annotations

import datetime as _dt
import json
import math
import os
import re
import subprocess
import time
from pathlib import Path

from .files import atomic_write
from .profiles import PROFILES

RESULTS_ENV = "COURSE_RESULTS"
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_STEM = re.compile(r"^[a-z0-9][a-z0-9_]*$")
_started = time.perf_counter()


def start_clock() -> None:
    """Restart the wall-time clock (``setup()`` calls this at the top of a notebook)."""
    global _started
    _started = time.perf_counter()


def elapsed_s() -> float:
    return time.perf_counter() - _started


def format_seconds(seconds: float) -> str:
    """How the course prints a wall time: ``53 s`` below two minutes, else ``4.2 min``."""
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def results_dir() -> Path:
    """``COURSE_RESULTS`` if set, else ``results/`` of the source checkout, else ``./results``."""
    env = os.environ.get(RESULTS_ENV)
    if env:
        return Path(env)
    checkout = Path(__file__).resolve().parents[1]
    if (checkout / "pyproject.toml").is_file():
        return checkout / "results"
    return Path.cwd() / "results"  # an installed package (e.g. on Colab): next to the notebook


def git_commit(cwd: Path | None = None) -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             cwd=cwd or Path(__file__).resolve().parent, timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def record_results(notebook: str, metrics: dict[str, float], *, profile: str | None = None,
                   device: str | None = None, wall_time_s: float | None = None,
                   out_dir: str | Path | None = None) -> Path:
    """Write this run's record atomically and return its path."""
    from .device import describe_device
    from .profiles import active_profile

    profile = profile or active_profile()
    if profile not in PROFILES:
        raise ValueError(f"Unknown profile {profile!r}; valid: {', '.join(PROFILES)}.")
    if not _STEM.match(notebook):
        raise ValueError(f"Notebook name {notebook!r} should be the file stem, e.g. '03_vae'.")
    clean = {}
    for name, value in metrics.items():
        if not _NAME.match(name):
            raise ValueError(f"Metric name {name!r} must be snake_case and include its unit, e.g. 'test_loss_nats'.")
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"Metric {name!r} is {value}; only finite numbers can be recorded.")
        clean[name] = value
    record = {
        "notebook": notebook,
        "profile": profile,
        "device": device or describe_device(),
        "wall_time_s": round(elapsed_s() if wall_time_s is None else float(wall_time_s), 1),
        "commit": git_commit(),
        "created": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "metrics": clean,
    }
    path = Path(out_dir or results_dir()) / notebook / f"{profile}.json"
    with atomic_write(path, "w", encoding="utf-8") as f:
        json.dump(record, f, indent=1)
        f.write("\n")
    return path


def load_results(root: str | Path | None = None) -> list[dict]:
    """Every record under ``root`` (default: the results folder), sorted by notebook and profile."""
    root = Path(root or results_dir())
    records = [json.loads(p.read_text(encoding="utf-8")) for p in sorted(root.glob("*/*.json"))]
    order = {p: i for i, p in enumerate(PROFILES)}
    return sorted(records, key=lambda r: (r["notebook"], order.get(r["profile"], 99)))
