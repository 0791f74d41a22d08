"""Test-session settings shared by unit tests and notebook runs (nbval).

- every notebook runs in the ``smoke`` profile, offline, with its data under ``COURSE_DATA``
  (default: the ``shared/data`` folder beside this checkout, as on CI);
- results records go to a temporary folder, never over the committed ones;
- any network connection fails (``tests/netguard``), in this process and in notebook kernels;
- each notebook must finish within ``NOTEBOOK_BUDGET_S`` seconds, kernel start included.
"""
import os
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent
NOTEBOOK_BUDGET_S = float(os.environ.get("COURSE_NOTEBOOK_BUDGET_S", "60"))

os.environ["COURSE_PROFILE"] = "smoke"
os.environ["COURSE_OFFLINE"] = "1"
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("COURSE_RESULTS", tempfile.mkdtemp(prefix="course-results-"))
_shared = ROOT.parent / "shared" / "data"
if "COURSE_DATA" not in os.environ and _shared.is_dir():
    os.environ["COURSE_DATA"] = str(_shared)
_guard = str(ROOT / "tests" / "netguard")
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (_guard, os.environ.get("PYTHONPATH")) if p)
sys.path.insert(0, _guard)
import course_netguard  # noqa: E402  (by its own name: another sitecustomize, e.g. Debian's, may be loaded already)

course_netguard.install()  # this process too

_spans: dict[str, list[float]] = {}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    start = time.perf_counter()
    yield
    if item.path.suffix == ".ipynb":
        name = os.path.relpath(item.path, ROOT) if item.path.is_relative_to(ROOT) else str(item.path)
        span = _spans.setdefault(name, [start, start])
        span[1] = time.perf_counter()


def notebook_times() -> dict[str, float]:
    return {nb: end - start for nb, (start, end) in _spans.items()}


def pytest_terminal_summary(terminalreporter):
    times = notebook_times()
    if not times:
        return
    terminalreporter.section(f"notebook wall times (smoke budget {NOTEBOOK_BUDGET_S:.0f} s each)")
    for nb, seconds in sorted(times.items()):
        flag = "  OVER BUDGET" if seconds > NOTEBOOK_BUDGET_S else ""
        terminalreporter.write_line(f"{seconds:7.1f} s  {nb}{flag}")


def pytest_sessionfinish(session, exitstatus):
    over = {nb: t for nb, t in notebook_times().items() if t > NOTEBOOK_BUDGET_S}
    if over:
        for nb, t in over.items():
            print(f"\nFAILED budget: {nb} took {t:.1f} s in the smoke profile (limit {NOTEBOOK_BUDGET_S:.0f} s)")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
