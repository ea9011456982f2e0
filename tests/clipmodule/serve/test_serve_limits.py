"""`clipmodule serve` is read-only and local: files only under the folders it was given (an escaping path is
refused with 4xx), bounded bodies, texts, images and result counts, refusals as one line of JSON; 127.0.0.1 by
default."""

from __future__ import annotations

import base64
import http.client
import io
import json
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
from PIL import Image


def raw_get(url: str, path: str) -> tuple[int, bytes]:
    """GET `path` exactly as written (requests and browsers would normalise `..` away before sending)."""
    where = urlsplit(url)
    connection = http.client.HTTPConnection(where.hostname, where.port, timeout=10)
    try:
        connection.request("GET", path)
        reply = connection.getresponse()
        return reply.status, reply.read()
    finally:
        connection.close()


def png(width: int, height: int) -> str:
    data = io.BytesIO()
    Image.new("RGB", (width, height), (10, 200, 10)).save(data, format="PNG")
    return base64.b64encode(data.getvalue()).decode()


@pytest.mark.parametrize("path", [
    "/cards/..%2F..%2F..%2Fetc%2Fpasswd", "/cards/../../etc/passwd", "/cards/%2Fetc%2Fpasswd.png",
    "/cards/..%2Fserve0%2Ftiny.safetensors", "/cards/..%2Fcards0%2F..%2F..%2F..%2Fetc%2Fhostname.json",
    "/static/..%2F..%2Fcli.py", "/static/../serve/cli.py", "/thumb/tiny/..%2F00000.tar/000000001",
    "/thumb/tiny/%2Fetc%2Fpasswd/x", "/browse-image/tiny-work/..%2Fshards%2F00000.tar/000000001",
    "/browse-image/tiny-work/%2Fetc%2Fpasswd/x"])
def test_a_path_escaping_the_served_folders_is_refused(served, path):
    status, body = raw_get(served.url, path)
    assert 400 <= status < 500, (status, body[:200])
    assert b"root:" not in body and b"safetensors" not in body[:20]


def test_a_link_out_of_the_cards_folder_is_refused(served, cards, tmp_path):
    outside = tmp_path / "secret.png"
    Image.new("RGB", (4, 4)).save(outside)
    link = cards / "leak.png"
    link.symlink_to(outside)
    try:
        status, _ = raw_get(served.url, "/cards/leak.png")
        assert status == 403
    finally:
        link.unlink()
    assert raw_get(served.url, "/cards/tiny.filter.png")[0] == 200
    assert raw_get(served.url, "/cards/tiny.safetensors")[0] == 404  # only cards and their plots


def post(served, data, raw: bytes | None = None) -> requests.Response:
    body = raw if raw is not None else json.dumps({"indice_name": "tiny", "modality": "image", **data})
    return requests.post(served.url + "knn-service", data=body, timeout=10)


@pytest.mark.parametrize(("data", "status", "message"), [
    ({"text": "a" * 1001, "num_images": 3}, 413, "text: 1,001 characters, the limit is 1,000"),
    ({"text": "a red circle", "num_images": 51}, 413, "num_images: 51 is over the limit of 50"),
    ({"text": "a red circle", "num_images": 0}, 400, "num_images: expected a positive integer"),
    ({"image": png(600, 600), "num_images": 3}, 413, "image: over the limit of 262,144 pixels"),
    ({"image": "not base64!", "num_images": 3}, 400, "image: not valid base64"),
    ({"image": base64.b64encode(b"not an image").decode(), "num_images": 3}, 400, "image: cannot read it"),
    ({"image": base64.b64encode(base64.b64decode(png(8, 8))[:30]).decode(), "num_images": 3}, 400,
     "image: cannot read it"),  # a damaged PNG header (PIL raises SyntaxError/ValueError, not OSError)
    ({"image_url": "http://example.com/a.jpg", "num_images": 3}, 400, "fetches nothing"),
    ({"embedding_input": [1.0, 2.0], "num_images": 3}, 400, "2-dimensional embeddings, the index holds"),
    ({"num_images": 3}, 400, "give one of text, image and embedding_input"),
    ({"text": "a", "num_images": 3, "indice_name": "other"}, 404, "unknown index 'other' (known: tiny)"),
    ({"text": "a", "num_images": 3, "modality": "text"}, 400, "holds image embeddings only"),
])
def test_bad_or_oversized_queries_are_refused_in_one_line(served, data, status, message):
    reply = post(served, data)
    assert reply.status_code == status, reply.text
    error = reply.json()["error"]
    assert message in error and "\n" not in error


def test_a_body_over_the_limit_is_refused_before_it_is_read(served):
    big = json.dumps({"image": "A" * 250_000, "num_images": 3}).encode()
    reply = post(served, {}, raw=big)
    assert reply.status_code == 413 and "the limit is 200,000" in reply.json()["error"]
    chunked = requests.post(served.url + "knn-service", data=iter([big[:100_000], big[100_000:]]), timeout=10)
    assert chunked.status_code == 413 and "over the limit" in chunked.json()["error"]
    assert post(served, {}, raw=b"{not json").status_code == 400
    ids = json.dumps({"ids": list(range(51))})
    assert requests.post(served.url + "metadata", data=ids, timeout=10).status_code == 413
    assert requests.get(served.url + "api/neighbours/tiny/999", timeout=10).status_code == 404


def test_it_binds_loopback_unless_told_and_refuses_bad_flags(capsys, tmp_path):
    from clipmodule.cli import main
    from clipmodule.serve.cli import _parser, named_folders

    assert _parser().get_defaults().host == "127.0.0.1"
    assert named_folders(["work/index", "other=/data/index"], "--index") == {"index": Path("work/index"),
                                                                            "other": Path("/data/index")}
    for argv, expected in (([], "give at least one of --index, --work and --cards"),
                           (["--work", str(tmp_path / "none")], "folder not found"),
                           (["--index", str(tmp_path / "none")], "index folder not found"),
                           (["--index", f"a={tmp_path}", "--index", f"a={tmp_path}"], "given twice")):
        assert main(["serve", *argv]) == 2
        error = capsys.readouterr().err.strip()
        assert expected in error and len(error.splitlines()) == 1, error


@pytest.mark.slow
def test_the_command_serves_on_loopback_and_stops(indexed, work, cards):
    """`clipmodule serve` as a user starts it: the model loaded before the port opens, 127.0.0.1 only."""
    import shutil
    import socket
    import subprocess
    import sys
    import time

    root, _ = indexed
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen([sys.executable, "-m", "clipmodule", "serve", "--index", f"tiny={root / 'index'}",
                                "--work", f"w={work}", "--cards", str(cards), "--port", str(port)],
                               stdout=subprocess.PIPE, text=True)
    try:
        first = process.stdout.readline()  # printed once the indexes and models are loaded
        assert first.startswith(f"clipmodule serve: http://127.0.0.1:{port}/"), first
        deadline = time.time() + 60
        while True:
            try:
                reply = requests.get(f"http://127.0.0.1:{port}/indices-list", timeout=5)
                break
            except requests.ConnectionError:
                assert time.time() < deadline and process.poll() is None
                time.sleep(0.2)
        assert reply.json() == ["tiny"]
        if shutil.which("ss"):  # iproute2's socket list: the port is open on loopback only
            listening = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True).stdout
            assert f"127.0.0.1:{port}" in listening and f"0.0.0.0:{port}" not in listening, listening
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert process.returncode in (0, -15)
