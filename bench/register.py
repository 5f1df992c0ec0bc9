"""XEP-0077 in-band registration, the only way to put accounts into a ``memory:``
server from outside; blocking sockets in a few threads, before any load runs."""

from __future__ import annotations

import re
import socket
from concurrent.futures import ThreadPoolExecutor

from bench.common import DOMAIN, PASSWORD


def _read_until(sock: socket.socket, marker: bytes) -> bytes:
    data = b""
    while marker not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise RuntimeError(f"connection closed before {marker!r}: {data[-300:]!r}")
        data += chunk
    return data


def _register(port: int, user: str) -> None:
    with socket.create_connection(("127.0.0.1", port), 30) as sock:
        sock.sendall(f"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' "
                     f"to='{DOMAIN}' version='1.0'>".encode())
        _read_until(sock, b"</stream:features>")
        sock.sendall(f"<iq type='set' id='reg'><query xmlns='jabber:iq:register'><username>{user}</username>"
                     f"<password>{PASSWORD}</password></query></iq>".encode())
        reply = b""
        while not re.search(rb"<iq[^>]*id=.reg.[^>]*>", reply):
            reply += _read_until(sock, b">")
        if not re.search(rb"<iq[^>]*type=.result.", reply):
            raise RuntimeError(f"registering {user}: {reply[-300:]!r}")


def register_in_band(port: int, users, threads: int = 8) -> None:
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda user: _register(port, user), users))
