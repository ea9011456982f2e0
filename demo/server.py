"""A loopback HTTP server for the embedded demo "web": serves a folder on 127.0.0.1, plus failing URLs.

Paths under /fail/ misbehave on purpose so the download's failure accounting runs for real:
/fail/404/…, /fail/500/… return those statuses; /fail/truncated/<file> sends the first half of a real image;
/fail/text/… sends an HTML page with an image extension.
"""

from __future__ import annotations

import functools
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class _DemoHandler(SimpleHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        parts = self.path.lstrip("/").split("/", 2)
        if parts[0] != "fail" or len(parts) < 3:
            return super().do_GET()
        kind, rest = parts[1], parts[2]
        if kind in ("404", "500"):
            self.send_error(int(kind))
        elif kind == "truncated":
            body = (Path(self.directory) / rest).read_bytes()
            self._send(body[: len(body) // 2], "image/jpeg")
        else:
            self._send(b"<html><body>not an image</body></html>", "text/html")

    def _send(self, body: bytes, content_type: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args) -> None:  # keep the demo's output to its progress bars
        pass


class LoopbackServer:
    """`with LoopbackServer(folder) as server: server.url("a.jpg")`: started on entry, stopped on exit."""

    def __init__(self, directory: str | Path, port: int = 0):
        self.directory = Path(directory)
        self.requested_port = port
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("server is not running")
        return self._server.server_address[1]

    def url(self, path: str = "") -> str:
        return f"http://127.0.0.1:{self.port}/{path.lstrip('/')}"

    def start(self) -> LoopbackServer:
        handler = functools.partial(_DemoHandler, directory=str(self.directory))
        self._server = ThreadingHTTPServer(("127.0.0.1", self.requested_port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="demo-http", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=10)
            self._server = None

    def __enter__(self) -> LoopbackServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
