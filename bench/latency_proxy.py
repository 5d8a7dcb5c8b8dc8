"""A TCP proxy that adds a fixed round-trip delay, for benchmarks over a network-like link.

The test bed's kernel has no netem, and loopback SSH has no latency, so what pipelining and
ControlPersist save across a real network never shows. This proxy sits between the controller
and a sandbox host's published SSH port and holds every chunk for half the round trip in each
direction. The delay is per chunk, not per connection, and chunks keep their order; bandwidth is
not limited (a lab's LAN is rarely the bottleneck for Ansible, its round trips are).

    with LatencyProxy({40022: ("127.0.0.1", 2222)}, rtt_ms=10) as proxy:
        ...  # ssh -p 40022 127.0.0.1 sees a 10 ms round trip to the host behind 2222

    python bench/latency_proxy.py --rtt-ms 10 40022=127.0.0.1:2222   # the same, until Ctrl-C

Test bed only: it listens on loopback and forwards to the addresses it is given.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import socket
import sys
import threading
from collections.abc import Mapping, Sequence
from types import TracebackType

CHUNK = 65536


def free_port() -> int:
    """A loopback port nothing listens on now (the kernel's choice)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay_s: float) -> None:
    """Copy reader to writer, each chunk released delay_s after it arrived, in order."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def release() -> None:
        while True:
            due, data = await queue.get()
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if not data:  # end of stream, passed on after the same delay
                with contextlib.suppress(OSError):
                    writer.write_eof()
                return
            writer.write(data)
            await writer.drain()

    releaser = asyncio.create_task(release())
    try:
        while True:
            data = await reader.read(CHUNK)
            queue.put_nowait((loop.time() + delay_s, data))
            if not data:
                break
        await releaser
    except (ConnectionError, OSError):
        pass
    finally:
        releaser.cancel()


class LatencyProxy:
    """Listens on 127.0.0.1:<port> for each entry of `routes` and forwards to its target."""

    def __init__(self, routes: Mapping[int, tuple[str, int]], rtt_ms: float) -> None:
        if rtt_ms < 0:
            raise ValueError(f"rtt_ms must be >= 0, got {rtt_ms}")
        self.routes = dict(routes)
        self.rtt_ms = rtt_ms
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._connections: set[asyncio.Task[None]] = set()

    async def _handle(self, target: tuple[str, int], client_r: asyncio.StreamReader,
                      client_w: asyncio.StreamWriter) -> None:
        one_way = self.rtt_ms / 2000
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        task.add_done_callback(self._connections.discard)
        try:
            host_r, host_w = await asyncio.open_connection(*target)
        except OSError:
            client_w.close()
            return
        try:
            await asyncio.gather(_pump(client_r, host_w, one_way), _pump(host_r, client_w, one_way))
        except asyncio.CancelledError:
            # Only _serve cancels, at shutdown. Ending normally, because asyncio's own callback
            # on a cancelled connection task logs a CancelledError traceback (Python 3.11).
            pass
        finally:
            for w in (host_w, client_w):
                w.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        servers = []
        try:
            for port, target in self.routes.items():
                servers.append(await asyncio.start_server(functools.partial(self._handle, target),
                                                          "127.0.0.1", port))
        except OSError as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        await self._stop.wait()
        for server in servers:
            server.close()
        for task in list(self._connections):  # connections still open when the bench ends
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        for server in servers:
            await server.wait_closed()

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        try:
            self._loop.run_until_complete(self._serve())
        finally:
            self._loop.close()

    def __enter__(self) -> LatencyProxy:
        self._thread = threading.Thread(target=self._run, name="latency-proxy", daemon=True)
        self._thread.start()
        self._ready.wait(timeout=10)
        if self._error is not None:
            raise RuntimeError(f"latency proxy could not listen: {self._error}") from self._error
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._loop and self._stop and self._thread:
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(timeout=10)


def parse_route(text: str) -> tuple[int, tuple[str, int]]:
    """`LISTEN=HOST:PORT` as in the command line."""
    try:
        listen, target = text.split("=", 1)
        host, port = target.rsplit(":", 1)
        return int(listen), (host, int(port))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected LISTEN_PORT=HOST:PORT") from None


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rtt-ms", type=float, required=True, help="round trip added, in milliseconds")
    p.add_argument("routes", nargs="+", type=parse_route, metavar="LISTEN=HOST:PORT")
    args = p.parse_args(argv)
    with LatencyProxy(dict(args.routes), args.rtt_ms):
        print(f"latency proxy: +{args.rtt_ms:g} ms round trip on "
              + ", ".join(f"127.0.0.1:{port} -> {host}:{tport}" for port, (host, tport) in args.routes),
              flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
