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

from curation.download import aggregate_shard_stats


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
               "--image-size", "32", "--samples-per-shard", "20", "--threads", "2", "--timeout", "5"]
    first = subprocess.Popen(command, env=clean_env, start_new_session=True, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while not list(out.glob("*_stats.json")) and time.monotonic() < deadline and first.poll() is None:
        time.sleep(0.05)
    os.killpg(first.pid, signal.SIGKILL)  # the whole tree: curation, img2dataset and its workers
    first.communicate()
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
