"""bench/latency_proxy.py: bytes pass unchanged and in order, and each round trip is held back.

The delay check is a lower bound (the proxy must not release a chunk early); how much later it
comes depends on the machine's load and is not asserted.
"""

from __future__ import annotations

import argparse
import os
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from pathload import REPO, load_module

proxy_mod = load_module("latency_proxy", REPO / "bench" / "latency_proxy.py")


@pytest.fixture
def echo_port() -> Iterator[int]:
    """A loopback echo server (one connection at a time), for the proxy to forward to."""
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                while data := conn.recv(65536):
                    conn.sendall(data)

    threading.Thread(target=serve, daemon=True).start()
    yield port
    server.close()


def round_trip(port: int, payload: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sender = threading.Thread(target=sock.sendall, args=(payload,))
        sender.start()
        received = bytearray()
        while len(received) < len(payload):
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
        sender.join()
        return bytes(received)


def test_bytes_pass_unchanged_and_in_order(echo_port: int) -> None:
    payload = os.urandom(3 * 1024 * 1024)
    listen = proxy_mod.free_port()
    with proxy_mod.LatencyProxy({listen: ("127.0.0.1", echo_port)}, rtt_ms=2):
        assert round_trip(listen, payload) == payload


def test_each_round_trip_waits_at_least_the_configured_delay(echo_port: int) -> None:
    listen = proxy_mod.free_port()
    rtt_ms = 60
    with (proxy_mod.LatencyProxy({listen: ("127.0.0.1", echo_port)}, rtt_ms=rtt_ms),
          socket.create_connection(("127.0.0.1", listen), timeout=20) as sock):
        for _ in range(3):
            started = time.monotonic()
            sock.sendall(b"ping")
            assert sock.recv(16) == b"ping"
            assert (time.monotonic() - started) * 1000 >= rtt_ms * 0.99


def test_a_closed_target_closes_the_client(echo_port: int) -> None:
    dead = proxy_mod.free_port()  # nothing listens there
    listen = proxy_mod.free_port()
    with (proxy_mod.LatencyProxy({listen: ("127.0.0.1", dead)}, rtt_ms=0),
          socket.create_connection(("127.0.0.1", listen), timeout=20) as sock):
        assert sock.recv(16) == b""


def test_routes_are_parsed_and_bad_ones_named() -> None:
    assert proxy_mod.parse_route("40022=127.0.0.1:2222") == (40022, ("127.0.0.1", 2222))
    with pytest.raises(argparse.ArgumentTypeError, match="LISTEN_PORT=HOST:PORT"):
        proxy_mod.parse_route("40022")
    with pytest.raises(ValueError, match="rtt_ms"):
        proxy_mod.LatencyProxy({}, rtt_ms=-1)


def test_stopping_with_connections_open_closes_them_without_errors(
        echo_port: int, caplog: pytest.LogCaptureFixture) -> None:
    # An ssh ControlPersist master keeps its connection open past the bench that made it.
    listen = proxy_mod.free_port()
    with caplog.at_level("DEBUG", logger="asyncio"):
        with proxy_mod.LatencyProxy({listen: ("127.0.0.1", echo_port)}, rtt_ms=0):
            sock = socket.create_connection(("127.0.0.1", listen), timeout=20)
            sock.sendall(b"ping")
            assert sock.recv(16) == b"ping"
        assert sock.recv(16) == b""  # the proxy closed its side
        sock.close()
    assert [r.getMessage() for r in caplog.records if r.levelname in ("ERROR", "WARNING")] == []
