"""The network guard of the test runs: any attempt to reach beyond this machine raises.

``install()`` (idempotent) guards TCP and UDP sockets (``connect``, ``connect_ex``, ``sendto``,
``sendmsg``), the low-level ``_socket.socket`` type that ``socket.socket`` is built on (so
``importlib.reload(socket)`` stays guarded) and name lookups (``getaddrinfo``, ``gethostbyname``,
``gethostbyname_ex``). Loopback addresses (decided by ``ipaddress``, not by a "127." prefix), the
name "localhost" and Unix sockets stay allowed: Jupyter kernels talk to pytest over loopback.

It is installed in every Python process of a test run: ``sitecustomize.py`` beside this file (the
directory is put on PYTHONPATH) loads it in child processes such as notebook kernels, and the root
``conftest.py`` installs it in the pytest process itself (where another ``sitecustomize``, e.g.
Debian's, may already have been imported). CI also runs the tests in a network namespace that has
only a loopback interface; this guard is the second line, and the only one where namespaces are
unavailable.
"""
import _socket
import ipaddress
import socket


class NetworkBlocked(OSError):
    pass


LOCAL_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback", ""}


def is_local_host(host) -> bool:
    if isinstance(host, bytes):
        host = host.decode(errors="replace")
    if host is None or str(host).lower() in LOCAL_NAMES:
        return True
    try:
        return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
    except ValueError:
        return False  # any other name would need a DNS lookup, which is blocked too


def _is_local(sock, address) -> bool:
    if sock.family == getattr(socket, "AF_UNIX", None):
        return True
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return False  # raw, packet, netlink... sockets have no business in a test
    host = address[0] if isinstance(address, tuple) else address
    return is_local_host(host)


def _blocked(what) -> NetworkBlocked:
    return NetworkBlocked(f"Network access to {what!r} is blocked during tests: the course must work offline. "
                          "Read data from COURSE_DATA instead of downloading it.")


def _guard_address(position):
    def wrap(real):
        def method(self, *args, **kwargs):
            address = args[position] if len(args) > position else kwargs.get("address")
            if address is not None and not _is_local(self, address):
                raise _blocked(address)
            return real(self, *args, **kwargs)
        method._course_guarded = True
        return method
    return wrap


def _guard_sendmsg(real):
    def sendmsg(self, buffers, ancdata=(), flags=0, address=None):
        if address is not None and not _is_local(self, address):
            raise _blocked(address)
        return real(self, buffers, ancdata, flags, *(() if address is None else (address,)))
    sendmsg._course_guarded = True
    return sendmsg


def _guard_lookup(real):
    def lookup(host, *args, **kwargs):
        if not is_local_host(host):
            raise _blocked(host)
        return real(host, *args, **kwargs)
    lookup._course_guarded = True
    return lookup


def _guarded_socket_type(base):
    class GuardedSocket(base):  # a subclass: the C type itself cannot be patched
        __slots__ = ()  # no __dict__ or __weakref__ of its own: socket.socket adds them (also on a reload)
        connect = _guard_address(0)(base.connect)
        connect_ex = _guard_address(0)(base.connect_ex)
        sendto = _guard_address(-1)(base.sendto)  # sendto(data[, flags], address): the address comes last
        sendmsg = _guard_sendmsg(base.sendmsg)
    GuardedSocket.__name__ = GuardedSocket.__qualname__ = "socket"
    GuardedSocket.__module__ = "_socket"
    return GuardedSocket


def install() -> None:
    """Guard this process (idempotent)."""
    if getattr(socket.socket.connect, "_course_guarded", False):
        return
    if not getattr(_socket.socket, "_course_guarded_type", False):
        guarded = _guarded_socket_type(_socket.socket)
        guarded._course_guarded_type = True
        _socket.socket = _socket.SocketType = guarded
    socket.socket.connect = _guard_address(0)(socket.socket.connect)
    socket.socket.connect_ex = _guard_address(0)(socket.socket.connect_ex)
    socket.socket.sendto = _guard_address(-1)(socket.socket.sendto)
    socket.socket.sendmsg = _guard_sendmsg(socket.socket.sendmsg)
    for module in (socket, _socket):
        for name in ("getaddrinfo", "gethostbyname", "gethostbyname_ex"):
            real = getattr(module, name)
            if not getattr(real, "_course_guarded", False):
                setattr(module, name, _guard_lookup(real))
