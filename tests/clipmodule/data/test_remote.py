"""Shards in object storage: a real S3 API (moto's server) and a web server with range requests, both on
127.0.0.1, started and stopped here. Remote training reads the same samples with the same augmentation as
local training, resumes exactly, reads by range, caches indexes; failures are one line naming the URL."""

from __future__ import annotations

import http.server
import io
import re
import shutil
import socket
import threading
from pathlib import Path

import pytest
import torch

from clipmodule.data.datamodule import EpochLoader, ShardDataModule, ShardTrainDataset, TokenizingCollate
from clipmodule.data.shards import ShardCache, count_samples, shard_paths
from clipmodule.data.synthetic import write_synthetic_shards
from clipmodule.errors import ClipModuleError
from clipmodule.transforms import image_transform

moto_server = pytest.importorskip("moto.server")
boto3 = pytest.importorskip("boto3")
s3fs = pytest.importorskip("s3fs")
BUCKET = "clip-shards"


@pytest.fixture(scope="module")
def local_shards(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("local")
    write_synthetic_shards(directory, 2, 12, image_size=32)
    return directory


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def s3(local_shards):
    """A moto S3 server on a random loopback port holding the shards under s3://clip-shards/shards/."""
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=_free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    with pytest.MonkeyPatch.context() as env:
        for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                            "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": endpoint,
                            "AWS_MAX_ATTEMPTS": "1"}.items():
            env.setenv(name, value)
        client = boto3.client("s3")
        client.create_bucket(Bucket=BUCKET)
        for path in sorted(local_shards.iterdir()):
            client.upload_file(str(path), BUCKET, f"shards/{path.name}")
        s3fs.S3FileSystem.clear_instance_cache()  # fsspec keeps instances: none from another endpoint
        try:
            yield endpoint
        finally:
            s3fs.S3FileSystem.clear_instance_cache()
            server.stop()


def _loader(paths, batches=5):
    dataset = ShardTrainDataset(paths, image_transform(32, train=True), batch_size=4, batches_per_rank=batches,
                                shuffle_buffer=8)
    return EpochLoader(dataset, batch_size=4, num_workers=0, collate_fn=TokenizingCollate())


def test_s3_shards_train_like_local_ones_resume_exactly_and_cache_their_index(s3, local_shards, tmp_path):
    paths = shard_paths(f"s3://{BUCKET}/shards")  # a folder: its .tar objects
    assert paths == [f"s3://{BUCKET}/shards/0000{n}.tar" for n in (0, 1)]
    assert shard_paths(f"s3://{BUCKET}/shards/{{00000..00001}}.tar") == paths
    assert count_samples(paths) == 24  # from the _stats.json beside each shard
    local = list(_loader(shard_paths(str(local_shards))))
    remote = list(_loader(paths))
    assert [b["key"] for b in remote] == [b["key"] for b in local]
    assert all(torch.equal(a["image"], b["image"]) for a, b in zip(remote, local))
    interrupted = _loader(paths)
    iterator = iter(interrupted)
    for _ in range(2):
        next(iterator)
    resumed = _loader(paths)
    resumed.load_state_dict(interrupted.state_dict())
    rest = list(resumed)
    assert [b["key"] for b in rest] == [b["key"] for b in local[2:]]
    assert all(torch.equal(a["image"], b["image"]) for a, b in zip(rest, local[2:]))
    cached = list((tmp_path / "cache" / "shard-index").glob("*.json"))
    assert len(cached) == 4  # two local and two remote indexes; no sample data
    module = ShardDataModule(train_shards=f"s3://{BUCKET}/shards", batch_size=4, num_workers=1, image_size=32)
    batch = next(iter(module.train_dataloader()))  # through a loader worker process
    assert batch["image"].shape == (4, 3, 32, 32)
    assert module.shards_content_hash() is None  # hashing would download every shard


def test_s3_failures_are_one_line_naming_the_url(s3, monkeypatch):
    with pytest.raises(ClipModuleError, match=rf"1 of 3 shards are missing, the first: s3://{BUCKET}/shards/00002.tar"):
        shard_paths(f"s3://{BUCKET}/shards/{{00000..00002}}.tar")
    with pytest.raises(ClipModuleError, match="no-such-bucket/x.tar"):
        shard_paths("s3://no-such-bucket/x.tar")
    with pytest.raises(ClipModuleError, match=f"s3://{BUCKET}/elsewhere: no such object"):
        shard_paths(f"s3://{BUCKET}/elsewhere")
    boto3.client("s3").put_object(Bucket=BUCKET, Key="denied/00000.tar", Body=b"x")
    with pytest.MonkeyPatch.context() as auth:  # moto checks credentials from now on: ours are no IAM user's
        auth.setattr("moto.settings.INITIAL_NO_AUTH_ACTION_COUNT", 0)
        auth.setattr("moto.core.authorization.ActionAuthenticatorMixin.request_count", 0)
        with pytest.raises(ClipModuleError) as denied:
            shard_paths(f"s3://{BUCKET}/denied/00000.tar")
    assert "s3://clip-shards/denied/00000.tar" in str(denied.value) and "\n" not in str(denied.value)
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{_free_port()}")  # nobody listens there
    s3fs.S3FileSystem.clear_instance_cache()
    try:
        with pytest.raises(ClipModuleError, match=f"s3://{BUCKET}/shards"):
            shard_paths(f"s3://{BUCKET}/shards")
    finally:
        s3fs.S3FileSystem.clear_instance_cache()


class RangeServer:
    """Serves a folder over HTTP with HEAD and byte-range GETs (206), records every range asked for;
    `/forbidden/...` answers 403. `serve_ranges=False`: a server that ignores Range (200, the whole file)."""

    def __init__(self, root: Path, serve_ranges: bool = True):
        self.ranges: list[tuple[str, str | None]] = []
        server_root, ranges = root, self.ranges

        class Handler(http.server.BaseHTTPRequestHandler):
            def _target(self) -> bytes | None:
                if self.path.startswith("/forbidden/"):
                    self.send_error(403)
                    return None
                path = server_root / self.path.lstrip("/")
                if not path.is_file():
                    self.send_error(404)
                    return None
                return path.read_bytes()

            def do_HEAD(self) -> None:  # noqa: N802 (http.server's name)
                data = self._target()
                if data is not None:
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(data)))
                    self.send_header("ETag", f'"{hash(data)}"')
                    self.send_header("Accept-Ranges", "bytes")
                    self.end_headers()

            def do_GET(self) -> None:  # noqa: N802
                data = self._target()
                if data is None:
                    return
                wanted = self.headers.get("Range")
                ranges.append((self.path, wanted))
                found = re.fullmatch(r"bytes=(\d+)-(\d*)", wanted or "")
                if found and serve_ranges:
                    start = int(found.group(1))
                    end = min(int(found.group(2) or len(data) - 1), len(data) - 1)
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
                    data = data[start : end + 1]
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> RangeServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_https_shards_are_read_by_range_requests_and_failures_name_the_url(local_shards, tmp_path):
    root = tmp_path / "www"
    shutil.copytree(local_shards, root / "shards")
    (root / "shards" / "big.tar").write_bytes((local_shards / "00000.tar").read_bytes() * 40)  # 2.6 MB
    with RangeServer(root) as server:
        paths = shard_paths(f"{server.url}/shards/{{00000..00001}}.tar")
        assert count_samples(paths) == 24
        remote = list(_loader(paths))
        local = list(_loader(shard_paths(str(local_shards))))
        assert [b["key"] for b in remote] == [b["key"] for b in local]
        whole = [path for path, wanted in server.ranges if path.endswith(".tar") and not wanted]
        assert not whole  # every read of a shard asked for a byte range
        server.ranges.clear()
        cache = ShardCache([f"{server.url}/shards/big.tar"])
        assert cache.read(0, 5)[0] == "000000005"  # the first copy's samples (the tar ends after it)
        fetched = [wanted for path, wanted in server.ranges if path.endswith("big.tar")]
        assert fetched and all(int(w.split("-")[1]) < 2 << 20 for w in fetched)  # not the whole file
        cache.close()
        with pytest.raises(ClipModuleError, match=rf"1 of 1 shards are missing, the first: {server.url}/shards/9.tar"):
            shard_paths(f"{server.url}/shards/9.tar")
        with pytest.raises(ClipModuleError, match=rf"{server.url}/forbidden/0.tar: access denied"):
            shard_paths(f"{server.url}/forbidden/0.tar")


def test_a_server_that_ignores_ranges_is_one_line_not_a_corrupt_shard(local_shards, tmp_path):
    import tarfile

    from clipmodule.data.shards import index_shard

    root = tmp_path / "www"
    (root / "big").mkdir(parents=True)
    with tarfile.open(root / "big" / "00000.tar", "w") as tar:  # 3 MB: past fsspec's first 1 MB block
        for number in range(3):
            for ext, data in (("jpg", bytes(1 << 20)), ("txt", b"a caption")):
                info = tarfile.TarInfo(f"{number:06d}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    shutil.copytree(local_shards, root / "small")
    with RangeServer(root, serve_ranges=False) as server:
        with pytest.raises(ClipModuleError, match=rf"^{server.url}/big/00000.tar: the server ignores byte-range "
                                                  "requests .* or copy them to local disk$"):
            index_shard(f"{server.url}/big/00000.tar")
        assert not list((tmp_path / "cache").rglob("*.json"))  # nothing cached as the shard's damage
        with pytest.raises(ClipModuleError, match="ignores byte-range requests"):
            list(_loader([f"{server.url}/big/00000.tar"], batches=1))
        small = index_shard(f"{server.url}/small/00000.tar")  # 70 kB: the first block holds all of it
        assert small.error is None and len(small.keys) == 12


def test_the_train_extra_rules_out_the_s3fs_that_fsspec_warns_about():
    import tomllib
    from packaging.requirements import Requirement

    pyproject = tomllib.loads((Path(__file__).resolve().parents[3] / "pyproject.toml").read_text())
    wanted = [Requirement(line) for line in pyproject["project"]["optional-dependencies"]["train"]]
    s3fs_requirement = next(requirement for requirement in wanted if requirement.name == "s3fs")
    assert not s3fs_requirement.specifier.contains("0.4.2")  # 2020, no aiobotocore: fsspec warns below 0.5
    assert not s3fs_requirement.specifier.contains("2023.12.2") and s3fs_requirement.specifier.contains("2026.9.0")


def _same_size_tars() -> tuple[bytes, bytes]:
    """Two tars of the same size, members and sizes but other sample keys and bytes: only a version tells them
    apart (a re-uploaded shard)."""
    import tarfile

    tars = []
    for first in (1, 5):
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            for number in (first, first + 1):
                for ext in ("jpg", "txt"):
                    data = bytes([first]) * 700
                    info = tarfile.TarInfo(f"{number:06d}.{ext}")
                    info.size, info.mtime = len(data), 1700000000
                    tar.addfile(info, io.BytesIO(data))
        tars.append(buffer.getvalue())
    assert len(tars[0]) == len(tars[1]) and tars[0] != tars[1]
    return tars[0], tars[1]


def test_a_remote_object_replaced_by_a_same_size_tar_is_indexed_again(s3, tmp_path):
    """The remote index cache is keyed by URL, size and the object's version (S3's ETag; a web server's ETag or
    Last-Modified): a shard re-uploaded with other contents of the same size is indexed again, never served from
    the cache of the old one."""
    from clipmodule.data.shards import index_shard

    before, after = _same_size_tars()
    url = f"s3://{BUCKET}/replaced/00000.tar"
    client = boto3.client("s3")
    client.put_object(Bucket=BUCKET, Key="replaced/00000.tar", Body=before)
    assert shard_paths(f"s3://{BUCKET}/replaced") == [url]  # a listing, as a fit starts (s3fs caches it)
    assert index_shard(url).keys == ["000001", "000002"]
    client.put_object(Bucket=BUCKET, Key="replaced/00000.tar", Body=after)
    assert index_shard(url).keys == ["000005", "000006"]
    assert ShardCache([url]).read(0, 0)[1]["jpg"] == bytes([5]) * 700
    root = tmp_path / "www"
    root.mkdir()
    (root / "00000.tar").write_bytes(before)
    with RangeServer(root) as server:  # its ETag is a hash of the content
        assert index_shard(f"{server.url}/00000.tar").keys == ["000001", "000002"]
        (root / "00000.tar").write_bytes(after)
        assert index_shard(f"{server.url}/00000.tar").keys == ["000005", "000006"]
    assert len(list((tmp_path / "cache" / "shard-index").glob("*.json"))) == 4  # each version indexed once
