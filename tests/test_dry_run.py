"""The dry run: every notebook at the ``gpu`` profile's shapes with its steps capped, on the CPU.

``COURSE_PROFILE=gpu COURSE_DRY_RUN=1`` keeps the widths, depths, head counts, sequence lengths and
(mostly) batch sizes of ``gpu`` and replaces the sizes a notebook names in ``dry_run=dict(...)`` (steps,
samples, sweeps, time budgets). Code that only breaks at ``gpu`` sizes (an index into a longer sweep, a
width that GroupNorm or the heads do not divide) then fails here, not after a GPU has been rented. A dry
run must leave the checkout as it found it: the test sends its record to a temporary folder
(``COURSE_RESULTS``), as the README tells a person running one by hand.
"""
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import nbformat
import pytest
from nbclient import NotebookClient

from course_lib.profiles import sizes

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
DRY_RUN_BUDGET_S = 90.0  # measured 6 to 37 s per notebook on 2 CPU cores; room for a slower machine
CELL_TIMEOUT_S = 180


def sizes_call(path: Path) -> dict:
    """The keyword arguments of the notebook's one ``course_lib.sizes(...)`` call, by running its cell."""
    nb = nbformat.read(path, as_version=4)
    cells = [c for c in nb.cells if c.cell_type == "code" and "course_lib.sizes(" in c.source]
    assert len(cells) == 1, f"{path.name}: expected one cell calling course_lib.sizes(...), found {len(cells)}"
    calls = []
    fake_lib = SimpleNamespace(sizes=lambda **kwargs: calls.append(kwargs) or sizes(profile="gpu", **kwargs))
    exec(compile(cells[0].source, path.name, "exec"),
         {"course_lib": fake_lib, "session": SimpleNamespace(device="cpu", profile="gpu")})
    assert len(calls) == 1
    return calls[0]


def not_larger(cap, full) -> bool:
    """A cap never asks for more than ``gpu``: numbers no larger, sweeps no longer, per key in dicts."""
    if full is None or isinstance(cap, (bool, str)) or cap is None:
        return True
    if isinstance(cap, (int, float)) and isinstance(full, (int, float)):
        return cap <= full
    if isinstance(cap, dict) and isinstance(full, dict):
        return set(cap) <= set(full) and all(not_larger(v, full[k]) for k, v in cap.items())
    if isinstance(cap, (list, tuple)) and isinstance(full, (list, tuple)):
        return len(cap) <= len(full)
    return True


def test_not_larger_catches_a_cap_above_gpu():
    assert not_larger(10, 1_000) and not_larger([1, 2], [1, 2, 3]) and not_larger({"a": (1,)}, {"a": (1, 2)})
    assert not_larger(500, None) and not_larger(False, True) and not_larger("300", "all")
    assert not not_larger(2_000, 1_000) and not not_larger([1, 2, 3], [1])
    assert not not_larger({"a": (1, 2)}, {"a": (1,)})
    assert not not_larger({"b": 1}, {"a": 1}), "a key gpu does not have"


def test_the_notebooks_are_found():
    assert len(NOTEBOOKS) >= 18, [p.name for p in NOTEBOOKS]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_notebook_declares_dry_run_caps(path, monkeypatch):
    monkeypatch.delenv("COURSE_DRY_RUN", raising=False)
    call = sizes_call(path)
    caps = call.get("dry_run")
    assert caps, f"{path.name}: its sizes(...) cell needs dry_run=dict(...) capping steps and samples"
    gpu = {**call.get("common", {}), **call["gpu"]}
    assert set(caps) <= set(gpu), f"{path.name}: dry_run= caps unknown sizes {sorted(set(caps) - set(gpu))}"
    larger = sorted(k for k, v in caps.items() if not not_larger(v, gpu[k]))
    assert not larger, f"{path.name}: dry_run= should cap, but asks for more than gpu in {larger}"
    monkeypatch.setenv("COURSE_DRY_RUN", "1")
    cfg = sizes(profile="gpu", **call)
    assert cfg.dry_run and cfg.as_dict() == {**gpu, **caps}


def checkout_state() -> str:
    """What git sees as changed or new in the checkout (ignored files excluded)."""
    out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, f"git status failed in {ROOT}: {out.stderr}"
    return out.stdout


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_dry_run(path, monkeypatch, tmp_path):
    monkeypatch.setenv("COURSE_PROFILE", "gpu")
    monkeypatch.setenv("COURSE_DRY_RUN", "1")
    monkeypatch.setenv("COURSE_RESULTS", str(tmp_path / "results"))  # capped numbers are no gpu record
    before = checkout_state()
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    start = time.perf_counter()
    client.execute()  # raises CellExecutionError, naming the cell, on the first failing cell
    seconds = time.perf_counter() - start
    print(f"{path.stem}: dry run took {seconds:.1f} s")
    after = checkout_state()
    assert after == before, (f"{path.name}: the dry run changed the checkout; files it wrote or changed:\n"
                             + "\n".join(sorted(set(after.splitlines()) - set(before.splitlines()))))
    assert seconds <= DRY_RUN_BUDGET_S, (f"{path.name}: the dry run took {seconds:.0f} s (budget "
                                         f"{DRY_RUN_BUDGET_S:.0f} s); cap more steps in its dry_run=dict(...)")
