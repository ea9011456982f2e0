"""What img2dataset runs for `curation download`: a deadline per URL, the URL policy (redirects too), the
pixel limit before decoding. In-process and against loopback servers, so each check takes seconds."""

from __future__ import annotations

import io
import time

from clipformats.urls import allowed_schemes
from curation.stages.download.fetch import FetchPolicy, LimitedResizer, fetch_image
from tests.conftest import png_header

HTTP_ONLY = FetchPolicy(allowed_schemes(), 1_000_000)


def test_a_trickling_server_is_cut_at_the_deadline(hostile_server):
    started = time.monotonic()
    # ~1.6 KB at a byte per 0.2 s: every read returns within the 1 s socket timeout, the whole takes minutes
    key, stream, error = fetch_image((7, hostile_server.base + "/trickle.jpg"), 1.0, None, None, policy=HTTP_ONLY)
    assert time.monotonic() - started < 3.0
    assert key == 7 and stream is None and error == "timed out (deadline of 1 s per URL)"


def test_only_http_urls_are_opened_and_redirects_are_checked_too(hostile_server, image_server, tmp_path):
    local = tmp_path / "secret.jpg"
    local.write_bytes(b"local bytes")
    cases = {f"file://{local}": "URL refused: scheme 'file' not allowed", "http:///a.jpg": "URL refused: no host",
             "http://[::1": "URL refused: malformed URL", "http://user:pw@127.0.0.1/x.jpg": "URL refused: credentials",
             hostile_server.base + "/to-ftp": "HTTP Error 302: redirect refused: scheme 'ftp' not allowed"}
    for url, reason in cases.items():
        _, stream, error = fetch_image((0, url), 5, None, None, policy=HTTP_ONLY)
        assert stream is None and error.startswith(reason), (url, error)
    _, stream, error = fetch_image((0, image_server.base + "/img/0/red_circle.jpg"), 5, None, None, policy=HTTP_ONLY)
    assert error is None and stream.getvalue()[:2] == b"\xff\xd8"
    allowed = FetchPolicy(allowed_schemes(["file"]), 1_000_000)  # only when asked for by name
    _, stream, error = fetch_image((0, f"file://{local}"), 5, None, None, policy=allowed)
    assert error is None and stream.getvalue() == b"local bytes"


def test_an_image_over_the_pixel_limit_is_never_decoded():
    decoded = []
    resizer = LimitedResizer(lambda stream, boxes: decoded.append(stream.read()) or ("ok",), 1_000_000)
    result = resizer(io.BytesIO(png_header(30000, 30000)))
    assert result[-1] == "image over the pixel limit (1,000,000 pixels)" and decoded == []
    small = png_header(100, 100)
    assert resizer(io.BytesIO(small)) == ("ok",) and decoded == [small]  # within the limit: decoded as before
    assert resizer(io.BytesIO(b"not an image")) == ("ok",)  # unreadable header: img2dataset decides and names it


def test_only_img2dataset_multiprocessing_workers_are_tied_to_its_process(monkeypatch):
    from curation.stages.download import fetch as fetch

    tied = []
    monkeypatch.setattr(fetch, "die_with_parent", lambda pid, **options: tied.append((pid, options)))
    monkeypatch.setattr(fetch, "install", lambda policy: None)
    for children in (True, False):
        downloader = fetch.PolicedDownloader(len, FetchPolicy(allowed_schemes(), 1000, workers_are_children=children))
        downloader.parent_pid = 1  # as seen from a worker: another process made the downloader
        assert downloader((1, 2, 3)) == 3
    # pyspark's and Ray's workers are not img2dataset's children: never tied to it (and polled, not prctl)
    assert tied == [(1, {"kernel": False})]
