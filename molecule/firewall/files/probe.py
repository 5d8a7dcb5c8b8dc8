#!/usr/bin/env python3
"""Test helper run inside a client container: can this client open HOST:PORT?

Prints one JSON object: {"open": bool, "error": str, "body": str}. With --http it also
sends a plain HTTP GET (raw socket, so no proxy setting can interfere) and returns the body.
"""

from __future__ import annotations

import argparse
import json
import socket


def probe(host: str, port: int, timeout: float, http: bool) -> dict[str, object]:
    """Connect once; a refused or timed-out connection is the firewall's denial."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as conn:
            body = ""
            if http:
                conn.sendall(f"GET / HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
                chunks = []
                while True:
                    data = conn.recv(4096)
                    if not data:
                        break
                    chunks.append(data)
                body = b"".join(chunks).decode(errors="replace").split("\r\n\r\n", 1)[-1]
            else:
                conn.settimeout(timeout)
                body = conn.recv(64).decode(errors="replace").strip()
            return {"open": True, "error": "", "body": body}
    except OSError as exc:
        return {"open": False, "error": type(exc).__name__, "body": ""}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("--timeout", type=float, default=4.0)
    parser.add_argument("--http", action="store_true")
    args = parser.parse_args()
    print(json.dumps(probe(args.host, args.port, args.timeout, args.http)))


if __name__ == "__main__":
    main()
