"""Fixtures for every test: processes launched by tests import this tree (below); for the curation tests, a real
loopback HTTP image server and tiny caption tables.

The server renders real JPEGs (a named colour and shape, so captions describe their images) and also
answers with the failures a web crawl meets: 404, 500, a web page instead of an image, a truncated JPEG;
`closed_port_url` points at a port nobody listens on.
"""

from __future__ import annotations

import http.server
import io
import os
import socket
import threading
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image, ImageDraw

from clipmodule.data.synthetic import draw_shape

COLOURS = {"red": (220, 30, 30), "green": (30, 170, 60), "blue": (40, 60, 220), "yellow": (240, 220, 40)}
SHAPES = ("circle", "square", "triangle")
FAILING_PATHS = ("/missing.jpg", "/error.jpg", "/page.html", "/truncated.jpg")
REPO = Path(__file__).resolve().parents[1]  # the tree under test


def tree_pythonpath() -> str:
    """PYTHONPATH with this repository first: a launched interpreter imports `clipmodule`, `curation` and `tests`
    from the tree the tests stand in, never from another checkout installed in the environment (an editable
    install elsewhere would otherwise win for every worker started outside the repository root)."""
    others = [entry for entry in os.environ.get("PYTHONPATH", "").split(os.pathsep)
              if entry and Path(entry).resolve() != REPO]
    return os.pathsep.join([str(REPO), *others])


@pytest.fixture(autouse=True, scope="session")
def processes_import_this_tree():
    """Every process a test starts inherits this PYTHONPATH however it is started (`subprocess` without `env=` or
    with `tree_env()`, `torch.multiprocessing`, Ray's workers, img2dataset's pool); in-process imports are this
    tree's through pytest's `pythonpath` setting (pyproject.toml)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PYTHONPATH", tree_pythonpath())
        yield


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    """The slow tests hold the only checks of several promises (multi-rank resume, FSDP = DDP, signals, hostile
    URLs end to end, ...): name each with its outcome and time, so a CI log shows that they ran."""
    if config.option.collectonly:
        return
    slow = [report for outcome in ("passed", "failed", "error", "skipped")
            for report in terminalreporter.stats.get(outcome, [])
            if "slow" in getattr(report, "keywords", {}) and (report.when == "call" or report.outcome != "passed")]
    terminalreporter.write_sep("=", f"slow tests: {len(slow)} ran" if slow else
                               "slow tests: none ran (deselected: `make test` runs them with -m '')")
    for report in sorted(slow, key=lambda report: report.nodeid):
        terminalreporter.write_line(f"{report.outcome.upper():8} {report.duration:7.1f}s  {report.nodeid}")


# For multi-rank workers: one intra-op thread each (the ranks share the machine's cores), no warnings chatter.
QUIET_WORKER = {"OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def tree_env(**overrides: str) -> dict[str, str]:
    """The environment for a process a test launches: this one's, with this tree first on PYTHONPATH, then
    `overrides` (e.g. `**QUIET_WORKER`)."""
    return {**os.environ, "PYTHONPATH": tree_pythonpath(), **overrides}


def render(colour: str, shape: str, size: int = 48) -> bytes:
    image = Image.new("RGB", (size, size), "white")
    draw_shape(ImageDraw.Draw(image), shape, (size // 6, size // 6, size - size // 6, size - size // 6),
               COLOURS[colour])
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


class LoopbackServer:
    """A threaded HTTP server on 127.0.0.1 (random port) for one `with` block; `base` is its URL."""

    def __init__(self, handler: type) -> None:
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self.base = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models on a shared 2-core machine: a second intra-op thread only waits for a core."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class ImageServer(LoopbackServer):
    """`/img/<anything>/<colour>_<shape>.jpg` → that image (after `delay` seconds); failures at FAILING_PATHS."""

    def __init__(self, delay: float = 0.0):
        images = {f"{c}_{s}.jpg": render(c, s) for c in COLOURS for s in SHAPES}
        server_delay = delay

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                name = self.path.rsplit("/", 1)[-1]
                if self.path.startswith("/img/") and name in images:
                    time.sleep(server_delay)
                    self._send(200, "image/jpeg", images[name])
                elif self.path == "/error.jpg":
                    self._send(500, "text/plain", b"internal error")
                elif self.path == "/page.html":
                    self._send(200, "text/html", b"<html><body>not an image</body></html>")
                elif self.path == "/truncated.jpg":
                    whole = images["red_circle.jpg"]
                    self._send(200, "image/jpeg", whole[: len(whole) // 3])
                else:
                    self._send(404, "text/plain", b"not found")

            def _send(self, code: int, kind: str, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        LoopbackServer.__init__(self, Handler)


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/nobody-listens.jpg"


def tiny_captions(base: str, copies: int = 4) -> pa.Table:
    """Captions that describe their images, a few rows that match no query, and the failing URLs."""
    urls, captions = [], []
    for copy in range(copies):
        for colour in COLOURS:
            for shape in SHAPES:
                urls.append(f"{base}/img/{copy}/{colour}_{shape}.jpg")
                captions.append(f"A {colour} {shape} on a white background (photo {copy}).")
    for path in FAILING_PATHS:
        urls.append(base + path)
        captions.append(f"a photo that will not download: {path}")
    urls.append(closed_port_url())
    captions.append("a photo from a server that is down")
    urls += [f"{base}/img/x/red_circle.jpg", f"{base}/img/y/blue_square.jpg"]
    captions += ["qzxv wqpz", "1234 5678"]  # no query in these
    return pa.table({"url": urls, "caption": captions})


@pytest.fixture
def image_server():
    with ImageServer() as server:
        yield server


@pytest.fixture
def slow_image_server():
    with ImageServer(delay=0.15) as server:
        yield server


@pytest.fixture
def caption_table():
    """For a server base URL: the tiny caption table (see `tiny_captions`)."""
    return tiny_captions


@pytest.fixture
def failing_urls():
    """For a server base URL: the URLs that fail (404, 500, a web page, a truncated JPEG, a closed port)."""
    return lambda base: [base + path for path in FAILING_PATHS] + [closed_port_url()]


@pytest.fixture
def tiny_queries(tmp_path: Path) -> Path:
    """A small query list in the format `curation queries` writes (building the real one takes seconds)."""
    terms = ["red", "green", "blue", "yellow", "circle", "square", "triangle", "white background", "photo",
             "a", "on", "server", "down"]
    path = tmp_path / "queries.parquet"
    pq.write_table(pa.table({"id": pa.array(range(len(terms)), pa.int32()), "term": terms,
                             "source": ["test"] * len(terms), "count": pa.nulls(len(terms), pa.int64())}), path)
    return path


@pytest.fixture
def clean_env(monkeypatch):
    """Environment for subprocesses: this tree first on PYTHONPATH, offline-safe img2dataset, no colours in rich
    output."""
    monkeypatch.setenv("NO_ALBUMENTATIONS_UPDATE", "1")
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setenv("TERM", "dumb")
    return tree_env()


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header announces width x height (a decompression bomb's first bytes); its pixels are
    missing, so nothing can decode it, but reading the header costs nothing."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + \
        chunk(b"IEND", b"")


class HostileServer(LoopbackServer):
    """What a hostile crawl meets: `/trickle.jpg` (a valid JPEG sent one byte every `gap` seconds), `/to-ftp`
    (a redirect to an ftp:// URL, which urllib would follow), `/large.png` (a real 200x200 PNG, 40,000
    pixels), `/bomb.png` (a header announcing 30000x30000). Stopped with the `with` block."""

    def __init__(self, gap: float = 0.2):
        jpeg = render("red", "circle")
        buffer = io.BytesIO()
        Image.new("RGB", (200, 200), "blue").save(buffer, "PNG")
        large, bomb = buffer.getvalue(), png_header(30000, 30000)

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                if self.path == "/trickle.jpg":
                    self._head(200, len(jpeg))
                    for index in range(len(jpeg)):
                        self.wfile.write(jpeg[index:index + 1])
                        self.wfile.flush()
                        time.sleep(gap)
                elif self.path == "/to-ftp":
                    self.send_response(302)
                    self.send_header("Location", "ftp://127.0.0.1:1/etc/hostname")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                elif self.path in ("/large.png", "/bomb.png"):
                    body = large if self.path == "/large.png" else bomb
                    self._head(200, len(body), "image/png")
                    self.wfile.write(body)
                else:
                    self._head(404, 0)

            def _head(self, code: int, length: int, kind: str = "image/jpeg") -> None:
                self.send_response(code)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(length))
                self.end_headers()

            def handle(self) -> None:
                import contextlib

                with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the client gave up: the point
                    super().handle()

            def log_message(self, *args) -> None:
                pass

        LoopbackServer.__init__(self, Handler)


@pytest.fixture
def hostile_server():
    with HostileServer() as server:
        yield server
