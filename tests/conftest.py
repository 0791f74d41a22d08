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
