"""Per-test hygiene for the unit tests: each test leaves torch as it found it.

A test that changes the number of threads, turns on deterministic algorithms or draws from the global
random generator must not change what the next test sees (the order of tests would then matter).
"""
import pytest
import torch


@pytest.fixture(autouse=True)
def restore_torch_state():
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    rng = torch.random.get_rng_state()
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
    torch.random.set_rng_state(rng)


@pytest.fixture
def one_thread():
    """Run a test on one thread (tiny models are faster so, and timings do not depend on the machine)."""
    torch.set_num_threads(1)  # restored by restore_torch_state
    yield


# ----------------------------------------------------------------------------- no hidden skips
# A skipped test is a check that did not run. In CI (.ci/run sets COURSE_FAIL_ON_SKIP=1) every skip must
# be one of the expected ones below, each tied to a fact about the machine; any other skip fails the run.
import os  # noqa: E402

EXPECTED_SKIPS = {
    "tests/test_browser.py": lambda: os.environ.get("COURSE_REQUIRE_BROWSER") != "1",  # no Chromium to drive
    "tests/test_doctor.py": torch.cuda.is_available,  # the CPU-only advice cannot show on a CUDA machine
    "tests/test_colab.py": torch.cuda.is_available,
}
_skipped = []


def pytest_runtest_logreport(report):
    if report.skipped:
        _skipped.append((report.nodeid, str(report.longrepr[-1]) if isinstance(report.longrepr, tuple) else ""))


def unexpected_skips(skipped):
    """The (nodeid, reason) pairs of skipped tests that no entry of EXPECTED_SKIPS explains."""
    return [(node, why) for node, why in skipped
            if not any(node.startswith(prefix) and expected() for prefix, expected in EXPECTED_SKIPS.items())]


def pytest_sessionfinish(session, exitstatus):
    if os.environ.get("COURSE_FAIL_ON_SKIP") != "1":
        return
    unexpected = unexpected_skips(_skipped)
    if unexpected:
        print("\n\nUnexpected skips (a check that did not run fails CI; see tests/conftest.py):")
        for node, why in unexpected:
            print(f"  {node}: {why}")
        session.exitstatus = 1


# ----------------------------------------------------------------------------- host syncs
import sys  # noqa: E402

_READS = ("item", "tolist", "__bool__", "__float__", "__int__")


@pytest.fixture
def host_syncs(monkeypatch):
    """The list of tensor-value reads (``.item()``, ``bool(t)``, ``float(t)``, ...) that course_lib's own code
    makes while the test runs. On a GPU each such read waits for all queued work, so a training loop must
    make them only at its logging steps, not at every step."""
    calls = []
    for name in _READS:
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _original=original, _name=name, **kwargs):
            caller = sys._getframe(1).f_globals.get("__name__", "")
            if caller.startswith("course_lib"):
                calls.append(f"{caller}: {_name}")
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    return calls
