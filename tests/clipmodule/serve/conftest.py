"""A tiny index (random tiny-vit, synthetic shards, `curation embed` + `curation index`), a curation work folder
holding every stage's decision files by their on-disk contract, a cards folder, and `clipmodule serve`'s app on
127.0.0.1 (a free port), stopped at the end."""

from __future__ import annotations

import json
import shutil
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

import clipmodule
from clipformats import curation_outputs as out
from clipmodule.data.synthetic import write_synthetic_shards
from curation.config import EmbedConfig, IndexConfig
from curation.stages.embed.embedding import run_embed
from curation.stages.index.knn_index import run_index

SHARDS, PER_SHARD = 3, 12


@pytest.fixture(scope="session")
def indexed(tmp_path_factory):
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("serve")
    model = root / "tiny.safetensors"
    clipmodule.save_checkpoint(clipmodule.create_model("tiny-vit"), model)
    write_synthetic_shards(root / "shards", SHARDS, PER_SHARD, image_size=32)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_embed(EmbedConfig(model=str(model)), [str(root / "shards")], root / "emb")
    finally:
        torch.set_num_threads(before)
    run_index(IndexConfig(recall_queries=20), root / "emb", root / "index")
    return root, model


def _write(table: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(table), path)


@pytest.fixture(scope="session")
def work(indexed):
    """A work folder as `curation build` leaves it: shard 00000's 12 samples and 4 matched rows the cap dropped;
    samples 1-2 dropped by the CLIP-score filter, 3 by caption length, 4 a duplicate of 0, 5 an eval copy; one
    URL that failed to download."""
    root, _ = indexed
    folder = root / "work"
    (folder / out.SHARDS).mkdir(parents=True)
    shutil.copy(root / "shards" / "00000.tar", folder / out.SHARDS / "00000.tar")
    keys = [f"00000{n:04d}" for n in range(PER_SHARD)]
    captions = [json.loads(line)["caption"] for line in _captions(root / "shards" / "00000.tar", keys)]
    urls = [f"http://127.0.0.1:1/img/{n}.jpg" for n in range(PER_SHARD)]
    dropped_by_cap = [f"http://127.0.0.1:1/capped/{n}.jpg" for n in range(4)]
    failed = "http://127.0.0.1:1/missing.jpg"
    _write({"id": [0, 1, 2], "term": ["red", "circle", "square"], "source": ["unigram"] * 3, "count": [9, 8, 7]},
           folder / out.QUERIES)
    all_urls = urls + dropped_by_cap + [failed]
    _write({"url": all_urls, "caption": captions + [f"a capped photo {n}" for n in range(4)] + ["a lost photo"],
            "query_ids": [[0, 1]] * len(urls) + [[2]] * 4 + [[0]]}, folder / out.MATCHED / "00000-captions.parquet")
    _write({"url": urls + [failed], "caption": captions + ["a lost photo"], "query_ids": [[0, 1]] * 13},
           folder / out.BALANCED / "00000-captions.parquet")
    # t = 20: "red" and "circle" (13 and 12 rows) are kept whole; "square" matched 400 rows of the whole crawl
    # (p = 0.05) and these 4 rows' coins (0.20, 0.46, 0.39, 0.94) do not come up
    (folder / out.BALANCE_STATS).write_text(json.dumps({"t": 20, "seed": 0, "key_column": "url"}))
    _write({"id": [0, 1, 2], "term": ["red", "circle", "square"], "matched": [13, 12, 400], "kept": [13, 12, 0]},
           folder / out.BALANCE_COUNTS)
    _write({"url": urls + [failed], "key": keys + [None], "caption": captions + ["a lost photo"],
            "status": ["success"] * PER_SHARD + ["failed_to_download"],
            "error_message": [None] * PER_SHARD + ["HTTP Error 404: Not Found"],
            "width": [32] * PER_SHARD + [None], "height": [32] * PER_SHARD + [None],
            "original_width": [48] * PER_SHARD + [None], "original_height": [40] * PER_SHARD + [None]},
           folder / out.SHARDS / "00000.parquet")
    reasons = ["", "clip_score", "clip_score", "caption_words"] + [""] * (PER_SHARD - 4)
    _write({"shard": ["00000.tar"] * PER_SHARD, "key": keys, "clip_score": [0.3 - 0.01 * n for n in range(PER_SHARD)],
            "kept": [not r for r in reasons], "reason": reasons}, folder / out.FILTER_ROWS)
    _write({"shard": ["00000.tar"], "key": [keys[4]], "duplicate_of_shard": ["00000.tar"],
            "duplicate_of_key": [keys[0]], "cosine": [0.987], "cluster": [3]}, folder / out.DEDUP_DROPS)
    _write({"shard": ["00000.tar"], "key": [keys[5]], "pass": ["phash"], "distance": [2], "cosine": [None],
            "eval_set": ["/eval"], "eval_image": ["/eval/red_circle.jpg"]}, folder / out.DECONTAMINATION_DROPS)
    return folder


def _captions(tar: Path, keys: list[str]) -> list[str]:
    import tarfile

    with tarfile.open(tar) as archive:
        return [archive.extractfile(f"{key}.json").read().decode() for key in keys]


@pytest.fixture(scope="session")
def cards(tmp_path_factory):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = tmp_path_factory.mktemp("cards")
    figure, axis = plt.subplots(figsize=(5, 2.4))
    axis.hist([0.3 - 0.01 * n for n in range(PER_SHARD)], bins=8, color="#4c72b0")
    axis.set(title="CLIP score", xlabel="cosine", ylabel="samples")
    figure.tight_layout()
    figure.savefig(folder / "tiny.filter.png", dpi=80)
    plt.close(figure)
    (folder / "tiny.md").write_text(
        "# Data card: tiny\n\n| | count |\n|---|---|\n| images downloaded | 12 |\n| kept by the filter | 9 |\n\n"
        "## Filter\n\nKept 9 of 12 samples.\n\n<script>alert(1)</script>\n\n![CLIP-score histogram](tiny.filter.png)\n")
    (folder / "TEMPLATE.md").write_text("# template\n")
    return folder


@dataclass
class Running:
    url: str
    service: object


def _serve(app, service):
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started:
        assert time.time() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.02)
    return server, thread, sock


@pytest.fixture(scope="session")
def served(indexed, work, cards):
    from clipmodule.serve.app import create_app
    from clipmodule.serve.limits import Limits
    from clipmodule.serve.service import ServeConfig, Service

    root, _ = indexed
    config = ServeConfig(indexes={"tiny": root / "index"}, works={"tiny-work": work}, cards=cards,
                         mlflow_ui="http://127.0.0.1:5000", limits=Limits(max_body_bytes=200_000, max_results=50,
                                                                           max_image_pixels=512 * 512))
    service = Service.open(config)
    server, thread, sock = _serve(create_app(service), service)
    host, port = sock.getsockname()
    yield Running(f"http://{host}:{port}/", service)
    server.should_exit = True
    thread.join(timeout=10)
    sock.close()
    service.close()
