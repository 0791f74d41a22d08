"""The smoke-time budget per notebook is enforced by conftest.py: a slow notebook fails the run."""
import os
import subprocess
import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_notebook

ROOT = Path(__file__).resolve().parents[1]


def run_pytest_on(notebook: Path, budget_s: str):
    env = {**os.environ, "COURSE_NOTEBOOK_BUDGET_S": budget_s}
    return subprocess.run([sys.executable, "-m", "pytest", "-c", "pyproject.toml", "-p", "conftest",
                           "-q", str(notebook)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)


def test_notebook_over_budget_fails_loudly(tmp_path):
    path = tmp_path / "slow.ipynb"
    nb = new_notebook(cells=[new_code_cell("import time\ntime.sleep(1.0)")],
                      metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    nbformat.write(nb, path)
    over = run_pytest_on(path, "0.5")
    assert over.returncode != 0, over.stdout
    assert "FAILED budget: " in over.stdout and "OVER BUDGET" in over.stdout
    within = run_pytest_on(path, "60")
    assert within.returncode == 0, within.stdout + within.stderr
