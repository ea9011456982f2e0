"""img2dataset really downloads from a loopback server; every row is accounted for; a killed run resumes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from clipformats.locks import group_alive
from curation.stages.download import downloading as download
from curation.stages.download.downloading import aggregate_shard_stats


def write_balanced(folder, urls: list[str]) -> None:
    """A finished `balance` output holding these URLs."""
    folder.mkdir(parents=True)
    table = pa.table({"url": urls, "caption": [f"caption {i}" for i in range(len(urls))],
                      "query_ids": pa.array([[i % 3] for i in range(len(urls))], pa.list_(pa.int32()))})
    pq.write_table(table, folder / "00000-part.parquet")
    folder.with_name(folder.name + ".stats.json").write_text(json.dumps(
        {"stage": "balance", "finished": True, "shards": [{"name": "00000-part.parquet", "rows": len(urls)}]}))


def samples_in_tars(folder) -> Counter:
    urls: Counter = Counter()
    for path in sorted(folder.glob("*.tar")):
        with tarfile.open(path) as tar:
            for member in tar.getmembers():
                if member.name.endswith(".json"):
                    urls[json.load(tar.extractfile(member))["url"]] += 1
    return urls


def test_killed_download_resumes_without_duplicates_or_losses(tmp_path, slow_image_server, failing_urls, clean_env):
    base = slow_image_server.base
    good = [f"{base}/img/{i}/{c}_circle.jpg" for i in range(20) for c in ("red", "blue", "green", "yellow")]
    bad = failing_urls(base)
    urls = good[:40] + bad + good[40:]
    write_balanced(tmp_path / "balanced", urls)
    out = tmp_path / "shards"
    command = [sys.executable, "-m", "curation", "download", "--input", str(tmp_path / "balanced"), "--out", str(out),
               "--image_size", "32", "--samples_per_shard", "20", "--threads", "2", "--timeout", "5"]
    first = subprocess.Popen(command, env=clean_env, start_new_session=True, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while not list(out.glob("*_stats.json")) and time.monotonic() < deadline and first.poll() is None:
        time.sleep(0.05)
    group = json.loads((tmp_path / "shards.lock").read_text())["process_group"]  # img2dataset and its workers
    assert group != os.getpgid(first.pid) and group_alive(group)
    os.kill(first.pid, signal.SIGKILL)  # curation alone: its children must follow it
    first.communicate()
    deadline = time.monotonic() + 15
    while group_alive(group) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not group_alive(group), "img2dataset or its workers outlived `curation download`"
    done_at_kill = len(list(out.glob("*_stats.json")))
    assert 1 <= done_at_kill < 5, "the kill must land mid-download"  # 85 rows: 5 shards of 20
    assert not json.loads((tmp_path / "shards.stats.json").read_text())["finished"]

    second = subprocess.run(command, env=clean_env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr
    assert "Traceback" not in second.stderr
    stats = json.loads((tmp_path / "shards.stats.json").read_text())
    assert stats["finished"] and stats["input_rows"] == stats["rows_accounted"] == len(urls) == 85
    assert stats["successes"] == len(good) and stats["failed"] == len(bad)
    assert stats["successes"] + stats["failed_to_download"] + stats["failed_to_resize"] == len(urls)
    reasons = " | ".join(stats["failure_reasons"])
    for expected in ("404", "500", "Connection refused"):
        assert expected in reasons
    assert sum(stats["failure_reasons"].values()) == len(bad)
    assert samples_in_tars(out) == Counter(dict.fromkeys(good, 1))  # each good image exactly once
    written = Counter(u for p in out.glob("*.parquet") for u in pq.read_table(p, columns=["url"])["url"].to_pylist())
    assert written == Counter(dict.fromkeys(urls, 1))  # img2dataset's per-row records: every row once

    third = subprocess.run(command, env=clean_env, capture_output=True, text=True, timeout=60)
    assert third.returncode == 0 and "up to date" in third.stderr


def test_aggregate_counts_lost_samples_as_failures():
    shards = [{"count": 10, "successes": 7, "failed_to_download": 2, "failed_to_resize": 0,
               "status_dict": {"success": 7, "HTTP Error 404: Not Found": 2}},
              {"count": 5, "successes": 5, "failed_to_download": 0, "failed_to_resize": 0,
               "status_dict": {"success": 5}}]
    totals = aggregate_shard_stats(shards, expected_rows=15)
    assert totals["rows_accounted"] == 15 and totals["successes"] == 12 and totals["failed"] == 3
    assert totals["failure_reasons"] == {"HTTP Error 404: Not Found": 2, "lost while writing (see the download log)": 1}


def test_failure_reasons_spanning_lines_are_collapsed_to_one_line_each():
    shards = [{"count": 4, "successes": 0, "failed_to_download": 4, "failed_to_resize": 0,
               "status_dict": {"HTTPSConnectionPool(host='x'):\n  Max retries\r\n exceeded": 2,
                               "HTTPSConnectionPool(host='x'): Max retries exceeded": 1, "\n": 1}}]
    reasons = aggregate_shard_stats(shards, expected_rows=4)["failure_reasons"]
    assert reasons == {"HTTPSConnectionPool(host='x'): Max retries exceeded": 3, "no reason given": 1}
    assert "\n" not in download._reasons({"failure_reasons": reasons})


@pytest.mark.parametrize("encode, quality", [("jpg", 200), ("jpg", -1), ("webp", 0), ("webp", 101), ("png", 10)])
def test_an_encode_quality_outside_the_format_s_range_is_one_line(tmp_path, capsys, encode, quality):
    from curation.cli import main

    write_balanced(tmp_path / "balanced", ["http://x/1.jpg"])
    code = main(["download", "--input", str(tmp_path / "balanced"), "--out", str(tmp_path / "shards"),
                 "--encode_format", encode, "--encode_quality", str(quality)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and f"download.encode_quality for {encode} must be in" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "shards").exists()


def cli_download(tmp_path, *options: str, env=None, timeout: float = 300) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "curation", "download", "--input", str(tmp_path / "balanced"),
               "--out", str(tmp_path / "shards"), "--image_size", "32", "--threads", "4", *options]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)


def test_bad_inputs_name_their_cause_before_img2dataset_starts(tmp_path, capsys):
    from curation.cli import main
    from tests.curation.test_balancing import write_matched

    write_balanced(tmp_path / "balanced", ["http://x/1.jpg"])
    code = main(["download", "--input", str(tmp_path / "balanced"), "--out", str(tmp_path / "shards"),
                 "--save_columns", "nonexistent"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "no column 'nonexistent' for --save_columns (columns: url, caption, query_ids)" in err
    assert "run again" not in err and not (tmp_path / "shards").exists()
    write_matched(tmp_path / "matched", shards=1)
    code = main(["download", "--input", str(tmp_path / "matched"), "--out", str(tmp_path / "shards")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "made by `curation match`, not `curation balance`" in err and len(err.splitlines()) == 1


def test_duplicate_urls_are_counted_and_dropped_only_when_asked(tmp_path):
    from curation.stages.download.downloading import duplicate_urls

    write_balanced(tmp_path / "balanced", ["http://x/a", "http://x/b", "http://x/a", "http://x/c", "http://x/a"])
    files = sorted((tmp_path / "balanced").glob("*.parquet"))
    assert duplicate_urls(files) == 2 and not (tmp_path / "dedup").exists()
    assert duplicate_urls(files, tmp_path / "dedup") == 2
    kept = pq.read_table(tmp_path / "dedup" / files[0].name)
    assert kept["url"].to_pylist() == ["http://x/a", "http://x/b", "http://x/c"]
    assert kept["caption"].to_pylist() == ["caption 0", "caption 1", "caption 3"]  # the first row of each URL


@pytest.mark.slow
def test_hostile_urls_fail_with_their_reason_and_a_trickle_stops_at_the_deadline(tmp_path, image_server,
                                                                                   hostile_server, clean_env):
    local = tmp_path / "local.jpg"
    local.write_bytes(b"\xff\xd8" * 10)
    good = [f"{image_server.base}/img/{i}/red_circle.jpg" for i in range(3)]
    hostile = [f"file://{local}", "http:///a.jpg", hostile_server.base + "/trickle.jpg",
               hostile_server.base + "/large.png"]
    write_balanced(tmp_path / "balanced", good + hostile + good[:2])
    started = time.monotonic()
    result = cli_download(tmp_path, "--timeout", "2", "--max_image_pixels", "10000", "--dedup_urls", env=clean_env)
    assert result.returncode == 0, result.stderr
    stats = json.loads((tmp_path / "shards.stats.json").read_text())
    assert stats["duplicate_urls"] == stats["duplicates_dropped"] == 2 and stats["input_rows"] == 7
    assert stats["successes"] == 3 and stats["failed"] == 4
    assert stats["failure_reasons"] == {
        "URL refused: scheme 'file' not allowed (only http, https; see --allow_schemes)": 1,
        "URL refused: no host": 1, "timed out (deadline of 2 s per URL)": 1,
        "image over the pixel limit (10,000 pixels)": 1}
    assert set(samples_in_tars(tmp_path / "shards")) == set(good)
    # the trickle would take ~6 minutes; img2dataset's start-up takes most of this
    assert time.monotonic() - started < 120 and "2 rows repeat an earlier URL (dropped)" in result.stderr


class FlakyServer:
    """Every request fails (503) while `down`; afterwards the images of `tiny_captions`."""

    def __init__(self):
        import http.server
        import threading

        from tests.conftest import render

        self.down = True
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                body = b"down" if server.down else render("red", "square")
                self.send_response(503 if server.down else 200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


@pytest.mark.slow
def test_a_download_where_every_url_failed_is_not_finished_and_the_plain_rerun_fetches(tmp_path, clean_env):
    server = FlakyServer()
    try:
        write_balanced(tmp_path / "balanced", [f"{server.base}/img/{i}.jpg" for i in range(6)])
        outage = cli_download(tmp_path, env=clean_env)
        assert outage.returncode == 2 and len(outage.stderr.strip().splitlines()) == 1, outage.stderr
        assert "not one of 6 images downloaded (6 HTTP Error 503" in outage.stderr and "run again" in outage.stderr
        assert not json.loads((tmp_path / "shards.stats.json").read_text())["finished"]
        server.down = False
        again = cli_download(tmp_path, env=clean_env)  # no --overwrite
        assert again.returncode == 0, again.stderr
        assert json.loads((tmp_path / "shards.stats.json").read_text())["successes"] == 6
    finally:
        server.close()


@pytest.mark.slow
def test_sigterm_stops_download_and_its_whole_process_group(tmp_path, slow_image_server, clean_env):
    write_balanced(tmp_path / "balanced", [f"{slow_image_server.base}/img/{i}/red_circle.jpg" for i in range(400)])
    command = [sys.executable, "-m", "curation", "download", "--input", str(tmp_path / "balanced"),
               "--out", str(tmp_path / "shards"), "--image_size", "32", "--threads", "1", "--samples_per_shard", "20"]
    run = subprocess.Popen(command, env=clean_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not list((tmp_path / "shards").glob("*_stats.json")) and time.monotonic() < deadline:
        time.sleep(0.05)
    group = json.loads((tmp_path / "shards.lock").read_text())["process_group"]
    run.send_signal(signal.SIGTERM)
    _, err = run.communicate(timeout=30)
    assert run.returncode == 128 + signal.SIGTERM and err.strip().endswith("terminated; run the same command "
                                                                          "again to resume"), err
    assert not group_alive(group) and not (tmp_path / "shards.lock").exists()
    assert not json.loads((tmp_path / "shards.stats.json").read_text())["finished"]


@pytest.mark.timeout(180)
def test_more_shards_than_a_pool_worker_serves_finishes(tmp_path, image_server, clean_env):
    """img2dataset retires a pool worker after 5 shards and its pool thread starts the next one: that worker
    must not be killed when the thread exits at shutdown (Pool.terminate would then wait for ever)."""
    urls = [f"{image_server.base}/img/{i}/red_circle.jpg" for i in range(14)]
    write_balanced(tmp_path / "balanced", urls)
    command = [sys.executable, "-m", "curation", "download", "--input", str(tmp_path / "balanced"),
               "--out", str(tmp_path / "shards"), "--image_size", "32", "--samples_per_shard", "2",
               "--processes", "1", "--threads", "2"]
    done = subprocess.run(command, env=clean_env, capture_output=True, text=True, timeout=150)
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(list((tmp_path / "shards").glob("*.tar"))) == 7
    assert sum(samples_in_tars(tmp_path / "shards").values()) == 14
