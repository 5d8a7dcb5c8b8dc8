"""Stand-in for a workspace's Jupyter behind the front door (test bed only).

GET answers 200 with the path and the request headers as JSON, so a test sees what nginx
passed on; a websocket upgrade (Connection: upgrade, Upgrade: websocket) answers 101, as
Jupyter's kernel channels do, then closes.
"""

from __future__ import annotations

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        connection = self.headers.get("Connection", "").lower()
        if "upgrade" in connection and self.headers.get("Upgrade", "").lower() == "websocket":
            self.send_response(101)
            self.send_header("Upgrade", "websocket")
            self.send_header("Connection", "Upgrade")
            self.send_header("X-Upstream-Path", self.path)
            self.end_headers()
            self.wfile.flush()
            self.close_connection = True
            return
        body = json.dumps({"path": self.path, "headers": dict(self.headers.items())}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


if __name__ == "__main__":
    ThreadingHTTPServer((sys.argv[1], int(sys.argv[2])), Echo).serve_forever()
