"""Loaded by every Python process the tests start (the directory is put on PYTHONPATH):
any attempt to open a network connection beyond this machine raises, so a test or a
notebook that reaches for the internet fails loudly instead of passing by luck."""
import socket

_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex


class NetworkBlocked(OSError):
    pass


def _is_local(sock, address) -> bool:
    if sock.family == getattr(socket, "AF_UNIX", None):
        return True
    host = address[0] if isinstance(address, tuple) else address
    return host in ("localhost", "::1") or str(host).startswith("127.")


def _guarded(real):
    def connect(self, address):
        if not _is_local(self, address):
            raise NetworkBlocked(
                f"Network access to {address!r} is blocked during tests: the course must work offline. "
                "Read data from COURSE_DATA instead of downloading it."
            )
        return real(self, address)
    return connect


socket.socket.connect = _guarded(_real_connect)
socket.socket.connect_ex = _guarded(_real_connect_ex)
