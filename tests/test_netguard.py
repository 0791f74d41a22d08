"""The network guard (tests/netguard/course_netguard.py) blocks every way out of the machine and keeps
loopback working, in the pytest process, in child processes and in notebook kernels. Addresses probed
are reserved for documentation (192.0.2.0/24, 2001:db8::/32, example.invalid), with short timeouts, so
even a guard that failed open would not reach anyone."""
import _socket
import importlib
import socket
import subprocess
import sys

import pytest

OUTSIDE = ("192.0.2.1", 80)  # TEST-NET-1, RFC 5737


def test_outbound_tcp_fails_in_tests():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(2)
        with pytest.raises(OSError, match="blocked during tests"):
            s.connect(OUTSIDE)
        with pytest.raises(OSError, match="blocked during tests"):
            s.connect_ex(OUTSIDE)
    with pytest.raises(OSError, match="blocked during tests"):
        socket.create_connection(("2001:db8::1", 80), timeout=2)


def test_udp_low_level_sockets_and_reload_are_guarded_too():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        with pytest.raises(OSError, match="blocked during tests"):
            s.sendto(b"x", OUTSIDE)
        with pytest.raises(OSError, match="blocked during tests"):
            s.sendto(b"x", 0, OUTSIDE)
        with pytest.raises(OSError, match="blocked during tests"):
            s.sendmsg([b"x"], [], 0, OUTSIDE)
    raw = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)
    try:
        raw.settimeout(2)
        with pytest.raises(OSError, match="blocked during tests"):
            raw.connect(OUTSIDE)
    finally:
        raw.close()
    importlib.reload(socket)
    with socket.socket() as s:
        s.settimeout(2)
        with pytest.raises(OSError, match="blocked during tests"):
            s.connect(OUTSIDE)


def test_name_lookups_are_blocked_and_loopback_is_decided_by_address():
    for lookup in (lambda: socket.getaddrinfo("example.invalid", 80), lambda: socket.gethostbyname("example.invalid"),
                   lambda: _socket.getaddrinfo("example.invalid", 80)):
        with pytest.raises(OSError, match="blocked during tests"):
            lookup()
    with socket.socket() as s:  # a name that merely starts with "127." is not loopback
        with pytest.raises(OSError, match="blocked during tests"):
            s.connect(("127.example.invalid", 80))
    assert socket.getaddrinfo("localhost", 80)  # local names still resolve


def test_loopback_is_allowed():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        with socket.create_connection(server.getsockname(), timeout=5):
            pass


def test_child_processes_inherit_the_guard():
    code = "import socket; s = socket.socket(); s.settimeout(2); s.connect(('192.0.2.1', 80))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "blocked during tests" in out.stderr


def test_a_notebook_kernel_is_guarded():
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.v4.new_notebook()
    nb.cells.append(nbformat.v4.new_code_cell(
        "import socket\ns = socket.socket(); s.settimeout(2)\n"
        "try:\n    s.connect(('192.0.2.1', 80)); print('REACHED')\nexcept OSError as err:\n    print(err)"))
    NotebookClient(nb, timeout=60, kernel_name="python3").execute()
    text = "".join(o.get("text", "") for o in nb.cells[0].outputs)
    assert "blocked during tests" in text and "REACHED" not in text
