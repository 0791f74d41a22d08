import socket
import subprocess
import sys

import pytest


def test_outbound_connection_fails_in_tests():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        with pytest.raises(OSError, match="blocked during tests"):
            s.connect(("93.184.216.34", 80))


def test_loopback_is_allowed():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        with socket.create_connection(server.getsockname(), timeout=5):
            pass


def test_child_processes_inherit_the_guard():
    # Notebook kernels are child processes: they must be guarded too.
    code = "import socket; s = socket.socket(); s.connect(('93.184.216.34', 80))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "blocked during tests" in out.stderr
