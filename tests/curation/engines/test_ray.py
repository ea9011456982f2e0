"""`--engine ray`: the same matched and balanced rows as the local engine; a bad address or bad input is one line."""

from __future__ import annotations

import dataclasses
import logging
import random
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation.cli import main
from curation.config import BalanceConfig, MatchConfig
from curation.errors import CurationError
from curation.stages.balance.balancing import run_balance
from curation.stages.match.matching import run_match
from tests.conftest import tree_env

WORDS = ["cat", "dog", "red", "blue", "car", "tree", "house", "river", "bird", "sky", "green", "old", "new", "york"]


@pytest.fixture
def local_ray():
    """A local Ray on 2 CPUs, always shut down."""
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level=logging.WARNING,
             log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


def caption_shards(folder: Path, shards: int = 4, rows: int = 1500) -> Path:
    """Random captions over a small vocabulary, so many queries have more rows than t."""
    rng = random.Random(7)
    folder.mkdir()
    for shard in range(shards):
        captions = [" ".join(rng.choices(WORDS + ["zzz", "qqq"], k=rng.randint(1, 6))) for _ in range(rows)]
        urls = [f"http://example.com/{shard}/{row}.jpg" for row in range(rows)]
        pq.write_table(pa.table({"url": urls, "caption": captions}), folder / f"part-{shard}.parquet")
    return folder


def query_list(path: Path) -> Path:
    terms = WORDS + ["new york", "red car", "blue sky", "unseen"]
    pq.write_table(pa.table({"id": pa.array(range(len(terms)), pa.int32()), "term": terms,
                             "source": ["test"] * len(terms)}), path)
    return path


def test_local_engine_and_help_do_not_import_ray(tmp_path):
    code = ("import sys; from curation.cli import curation_commands, help_text; help_text(); "
            "[command.parser().format_help() for command in curation_commands()]; "
            "import curation.stages.match.matching, curation.stages.balance.balancing; "
            "import curation.stages.decontaminate.decontamination; "
            "print([m for m in ('ray', 'imagehash') if m in sys.modules])")
    assert subprocess.run([sys.executable, "-c", code], env=tree_env(), capture_output=True, text=True,
                          check=True).stdout == "[]\n"


def test_unreachable_address_is_one_line_and_writes_nothing(tmp_path, capsys):
    captions, queries = caption_shards(tmp_path / "captions", shards=1, rows=10), query_list(tmp_path / "q.parquet")
    out = tmp_path / "matched"
    code = main(["match", "--captions", str(captions), "--queries", str(queries), "--out", str(out), "--engine", "ray",
                 "--ray_address", "127.0.0.1:9"])
    error = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(error) == 1 and "'127.0.0.1:9': no Ray cluster reachable there" in error[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["captions", "q.parquet"]


def test_address_held_by_something_else_is_one_line(tmp_path, monkeypatch):
    import http.server
    import threading

    import curation.engines.ray

    monkeypatch.setattr(curation.engines.ray, "PROBE_SECONDS", 8)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        address = f"127.0.0.1:{server.server_address[1]}"
        config = MatchConfig(engine="ray", ray_address=address)
        with pytest.raises(CurationError, match=f"ray address '{address}': (something listens|cannot connect)"):
            run_match(config, query_list(tmp_path / "q.parquet"), [str(caption_shards(tmp_path / "c", 1, 10))],
                      tmp_path / "matched")
        assert not (tmp_path / "matched").exists() and not (tmp_path / "matched.stats.json").exists()
    finally:
        server.shutdown()
        server.server_close()


def test_ray_engine_equals_local_engine_row_for_row(tmp_path, local_ray):
    captions, queries = caption_shards(tmp_path / "captions"), query_list(tmp_path / "q.parquet")
    outputs = {}
    for engine in ("local", "ray"):
        match, balance = MatchConfig(engine=engine, workers=2), BalanceConfig(t=200, seed=3, engine=engine, workers=2)
        matched, balanced = tmp_path / engine / "matched", tmp_path / engine / "balanced"
        outputs[engine] = (run_match(match, queries, [str(captions)], matched), run_balance(balance, matched, balanced))
        for folder in (matched, balanced):
            for path in [*sorted(folder.glob("*.parquet")), folder.with_name(folder.name + ".counts.parquet")]:
                outputs[engine] += (path.relative_to(tmp_path / engine), pq.read_table(path))
    local, ray = outputs["local"], outputs["ray"]
    assert len(local) == len(ray) == 2 + 2 * 2 * (4 + 1)  # stats, then (path, table) per file
    for mine, theirs in zip(local[2:], ray[2:]):
        assert mine == theirs if isinstance(mine, Path) else mine.equals(theirs)  # same rows, same order
    drop = ("fingerprint", "counts_file", "queries_file")
    for stats_local, stats_ray in zip(local[:2], ray[:2]):
        assert {k: v for k, v in stats_local.items() if k not in drop} == \
            {k: v for k, v in stats_ray.items() if k not in drop}
    assert ray[1]["queries_capped"] > 0 and ray[1]["rows_out"] < ray[1]["rows_in"]  # balancing did cap
    bad = tmp_path / "bad"
    bad.mkdir()
    pq.write_table(pa.table({"url": ["http://a/1.jpg"], "text": ["a cat"]}), bad / "x.parquet")
    with pytest.raises(CurationError, match="x.parquet.*no column 'caption'"):
        run_match(dataclasses.replace(MatchConfig(engine="ray")), queries, [str(bad)], tmp_path / "bad_matched")
    assert not (tmp_path / "bad_matched").exists() and not (tmp_path / "bad_matched.stats.json").exists()
