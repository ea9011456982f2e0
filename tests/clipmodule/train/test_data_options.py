"""Every documented form of `data.train_shards` through `clipmodule fit`'s own option parser: the value is taken as
written (never read as a sub-config file: `pairs.csv` is not the CSV's text, an `https://` folder not its HTML
page, a remote tar not downloaded), and the datamodule the CLI builds resolves it to the right sources. Remote
forms run against a moto S3 server and a web server on 127.0.0.1 that counts every request."""

from __future__ import annotations

import functools
import http.server
import re
from pathlib import Path

import pytest
import yaml

from clipmodule.data.synthetic import write_synthetic_shards
from tests.clipmodule.data.test_remote import BUCKET, local_shards, s3  # noqa: F401 (fixtures)
from tests.clipmodule.data.test_tables import write_csv, write_pairs
from tests.clipmodule.train.test_cli import TINY
from tests.conftest import LoopbackServer

pytest.importorskip("moto.server")


class ListingServer(LoopbackServer):
    """A web server over a folder with directory pages (fsspec lists a folder from its links) and byte ranges;
    `requests` records (method, path, Range header) of every request."""

    def __init__(self, root: Path):
        self.requests: list[tuple[str, str, str | None]] = []
        seen = self.requests

        class Handler(http.server.SimpleHTTPRequestHandler):
            def send_head(self):
                seen.append((self.command, self.path, self.headers.get("Range")))
                wanted = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range") or "")
                path = Path(self.translate_path(self.path))
                if not wanted or not path.is_file():
                    return super().send_head()
                data = path.read_bytes()
                start, end = int(wanted.group(1)), min(int(wanted.group(2) or len(data) - 1), len(data) - 1)
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
                self.send_header("Content-Length", str(end - start + 1))
                self.end_headers()
                self.wfile.write(data[start : end + 1])
                return None

            def log_message(self, *args) -> None:
                pass

        super().__init__(functools.partial(Handler, directory=str(root)))


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """shards/ (2 tars of 12 samples), pairs.csv and pairs.tsv (24 rows), photos/ (24 images with .txt)."""
    root = tmp_path_factory.mktemp("forms")
    write_synthetic_shards(root / "shards", 2, 12, image_size=32)
    pairs = write_pairs(root, rows=24)
    write_csv(root / "pairs.csv", pairs, header=("path", "caption"))
    write_csv(root / "pairs.tsv", pairs, header=("path", "caption"), separator="\t")
    (root / "photos").mkdir()
    for image, caption in pairs:
        (root / "photos" / Path(image).name).write_bytes((root / image).read_bytes())
        (root / "photos" / Path(image).name).with_suffix(".txt").write_text(caption)
    return root


@pytest.fixture(scope="module")
def web(data):
    with ListingServer(data) as server:
        yield server


@pytest.fixture(autouse=True)
def _in_data_folder(data, tmp_path, monkeypatch):
    monkeypatch.chdir(data)  # the relative forms are relative to the working folder
    monkeypatch.setenv("CLIPMODULE_CACHE", str(tmp_path / "cache"))


def printed_config(args: list[str], capsys) -> dict:
    """The config `clipmodule fit ... --print_config` prints (in this process: one start-up for every case)."""
    from clipmodule.cli import main

    capsys.readouterr()
    try:
        code = main(["fit", *TINY, *args, "--print_config"])
    except SystemExit as exit_:
        code = exit_.code
    captured = capsys.readouterr()
    assert code in (0, None), captured.err[-2000:]
    return yaml.safe_load(captured.out)


def resolved_sources(args: list[str]) -> list[tuple[str, list[str]]]:
    """(name, the shard file names or the table file name) of each training source of the datamodule that `fit`
    builds from `args`."""
    from clipmodule.train.cli import build_cli

    cli = build_cli([*TINY, *args, "--trainer.logger", "false", "--data.batch_size", "4", "--data.num_workers", "1"])
    dataset = cli.datamodule.train_dataset()
    return [(source.name, [Path(path).name for path in source.shards] or [Path(source.table.source).name])
            for source in dataset.sources]


SHARDS = ["00000.tar", "00001.tar"]
LOCAL_FORMS = {  # value on the command line -> the sources it names
    "shards": [("source0", SHARDS)],
    "shards/": [("source0", SHARDS)],
    "shards/{00000..00001}.tar": [("source0", SHARDS)],
    "shards/*.tar": [("source0", SHARDS)],
    "shards/00001.tar": [("source0", ["00001.tar"])],
    "[shards/00000.tar, shards/00001.tar]": [("source0", SHARDS)],
    "pairs.csv": [("source0", ["pairs.csv"])],
    "pairs.tsv": [("source0", ["pairs.tsv"])],
    "photos": [("source0", ["photos"])],
    "shards::pairs.csv": [("source0", SHARDS), ("source1", ["pairs.csv"])],
    "[{shards: pairs.csv, weight: 0.3, name: mine}, {shards: shards/, weight: 0.7}]":
        [("mine", ["pairs.csv"]), ("source1", SHARDS)],
}


@pytest.mark.parametrize("value", list(LOCAL_FORMS))
def test_every_local_form_is_taken_as_written_and_resolves_to_its_sources(value, capsys):
    config = printed_config(["--data.train_shards", value], capsys)
    assert _given(config["data"]["train_shards"]) == (value if value[0] != "[" else yaml.safe_load(value))
    assert resolved_sources(["--data.train_shards", value]) == LOCAL_FORMS[value]


def _given(value):
    """A printed value with the options the user did not give (printed as null) left out."""
    if isinstance(value, list):
        return [{k: v for k, v in item.items() if v is not None} if isinstance(item, dict) else item for item in value]
    return value


def test_the_forms_in_a_config_file_are_taken_as_written(tmp_path, capsys):
    """A string in a `-c` YAML file is read as it is on the command line."""
    mixture = [{"shards": "shards", "weight": 0.5}, {"shards": "pairs.csv", "weight": 0.5}]
    for value, expected in (("pairs.csv", [("source0", ["pairs.csv"])]), ("shards", [("source0", SHARDS)]),
                            (mixture, [("source0", SHARDS), ("source1", ["pairs.csv"])])):
        run = tmp_path / "run.yaml"
        run.write_text(yaml.safe_dump({"data": {"train_shards": value}}))
        assert _given(printed_config(["-c", str(run)], capsys)["data"]["train_shards"]) == value
        assert resolved_sources(["-c", str(run)]) == expected


def test_s3_forms_are_taken_as_written_and_resolve_to_the_objects(s3, capsys):  # noqa: F811 (the fixture)
    for value, expected in ((f"s3://{BUCKET}/shards/", SHARDS), (f"s3://{BUCKET}/shards", SHARDS),
                            (f"s3://{BUCKET}/shards/{{00000..00001}}.tar", SHARDS),
                            (f"s3://{BUCKET}/shards/00001.tar", ["00001.tar"])):
        assert printed_config(["--data.train_shards", value], capsys)["data"]["train_shards"] == value
        assert resolved_sources(["--data.train_shards", value]) == [("source0", expected)]
    value = f"[{{shards: 's3://{BUCKET}/shards/', weight: 0.5}}, {{shards: pairs.csv, weight: 0.5}}]"
    assert resolved_sources(["--data.train_shards", value]) == [("source0", SHARDS), ("source1", ["pairs.csv"])]


def test_https_forms_are_taken_as_written_and_no_shard_is_downloaded(web, capsys):
    for value, expected in ((f"{web.base}/shards/", SHARDS), (f"{web.base}/shards/{{00000..00001}}.tar", SHARDS),
                            (f"{web.base}/shards/00001.tar", ["00001.tar"]),
                            (f"{web.base}/shards/00001.tar::pairs.csv", None)):
        web.requests.clear()
        config = printed_config(["--data.train_shards", value, "--data.val_shards", f"{web.base}/shards/",
                                 "--data.zeroshot_shards", f"{web.base}/shards/00000.tar"], capsys)
        assert [config["data"][key] for key in ("train_shards", "val_shards", "zeroshot_shards")] == [
            value, f"{web.base}/shards/", f"{web.base}/shards/00000.tar"]
        assert web.requests == []  # parsing asks the server nothing
        resolved = resolved_sources(["--data.train_shards", value])
        assert resolved == ([("source0", expected)] if expected else [("source0", ["00001.tar"]),
                                                                      ("source1", ["pairs.csv"])])
        assert not [request for request in web.requests if request[1].endswith(".tar") and request[0] == "GET"]


def test_a_fit_on_one_remote_tar_reads_it_by_ranges_only(web, tmp_path, monkeypatch, capsys):
    """The parser used to read the tar as a config file, whole, three times, before the fit failed on its text."""
    from clipmodule.cli import main

    monkeypatch.chdir(tmp_path)
    web.requests.clear()
    code = main(["fit", *TINY, "--data.train_shards", f"{web.base}/shards/00001.tar",
                 "--trainer.max_steps", "2", "--data.batch_size", "4",
                 "--data.num_workers", "0", "--trainer.enable_progress_bar", "false"])
    assert code == 0, capsys.readouterr().err[-2000:]
    assert (tmp_path / "runs").is_dir()
    tar = [(method, wanted) for method, path, wanted in web.requests if path == "/shards/00001.tar"]
    assert tar and all(method == "HEAD" or wanted for method, wanted in tar), tar  # ranges, never the whole tar
