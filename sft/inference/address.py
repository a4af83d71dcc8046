"""Where a local server listens: the socket it binds before loading anything, so that a port in use is one line
at once rather than after minutes of loading, and how its address is shown. `sft serve` and `sft ui` use it."""

import errno
import ipaddress
import socket

from sft.errors import SFTError

LOCALHOST = "127.0.0.1"  # "localhost" may resolve to ::1 or to both families


def listening_socket(host: str, port: int) -> socket.socket:
    """A socket listening on `host`:`port` (0 picks a free port), or one line saying why not. Bound before the
    model loads, so a port in use is reported at once; connections queue until the server takes them."""
    if not 0 <= port <= 65535:
        raise SFTError(f"--port must be between 0 and 65535, got {port}")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as error:
        raise SFTError(f"cannot listen on {host}: {error.strerror}; give --host an address, e.g. {LOCALHOST}") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: a restart need not wait
    try:
        sock.bind(address)
        sock.listen(2048)
    except OSError as error:
        sock.close()
        if error.errno == errno.EADDRINUSE:
            raise SFTError(
                f"port {port} on {host} is already in use; stop what listens there or pick another port, "
                f"e.g. --port {port + 1 if port < 65535 else 8001}"
            ) from None
        if error.errno == errno.EACCES:
            raise SFTError(f"no permission to listen on port {port}; pick one above 1023, e.g. --port 8000") from None
        if error.errno == errno.EADDRNOTAVAIL:
            raise SFTError(f"{host} is not an address of this machine; try --host {LOCALHOST}") from None
        raise SFTError(f"cannot listen on {host}:{port}: {error.strerror or error}") from None
    return sock


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def page_url(host: str, port: int) -> str:
    shown = "127.0.0.1" if host in {"0.0.0.0", "::"} else host
    return f"http://[{shown}]:{port}/" if ":" in shown else f"http://{shown}:{port}/"
