"""The download's stall deadline and `--retry-failed`, against a loopback server that stalls, then recovers."""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections import Counter

import pytest

from clipformats.locks import group_alive
from curation.config import DownloadConfig
from curation.errors import CurationError
from curation.stages.download.downloading import img2dataset_arguments
from curation.stages.download.retry import merged_totals, retriable
from tests.conftest import LoopbackServer, render
from tests.curation.test_download import cli_download, samples_in_tars, write_balanced

IMAGE = render("red", "circle")


class StallingServer(LoopbackServer):
    """`/img/<i>.jpg`: held without an answer while `stalled` is set, then the image; `/flaky/<i>.jpg`: 503 on
    its first request, the image after; `/gone/<i>.jpg`: 404. Requests are counted by path."""

    def __init__(self) -> None:
        self.stalled, self.requests = threading.Event(), Counter()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                server.requests[self.path] += 1
                if self.path.startswith("/gone/"):
                    return self._send(404, b"gone")
                if self.path.startswith("/flaky/") and server.requests[self.path] == 1:
                    return self._send(503, b"busy")
                deadline = time.monotonic() + 60
                while server.stalled.is_set() and time.monotonic() < deadline:
                    time.sleep(0.05)
                return self._send(200, IMAGE)

            def _send(self, code: int, body: bytes) -> None:
                try:
                    self.send_response(code)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    pass  # the client was stopped while we stalled

            def log_message(self, *args) -> None:
                pass

        super().__init__(Handler)


def test_retriable_reasons():
    assert retriable("HTTP Error 503: Service Unavailable") and retriable("HTTP Error 429: Too Many Requests")
    assert retriable("<urlopen error [Errno 111] Connection refused>") and retriable("timed out (deadline of 5 s)")
    assert not retriable("HTTP Error 404: Not Found") and not retriable("HTTP Error 403: Forbidden")
    assert not retriable("URL refused: scheme 'ftp' is not allowed") and not retriable(None)


def test_merged_totals_count_each_retried_row_once():
    totals = {"rows_accounted": 12, "successes": 9, "failed": 3, "failed_to_download": 3, "failed_to_resize": 0,
              "failure_reasons": {"HTTP Error 503: busy": 2, "HTTP Error 404: gone": 1}, "success_rate": 0.75}
    merged = merged_totals(totals, [{"rows": 2, "replaced_reasons": {"HTTP Error 503: busy": 2}}])
    assert merged["rows_accounted"] == 10 and merged["failed"] == 1 and merged["failed_to_download"] == 1
    assert merged["failure_reasons"] == {"HTTP Error 404: gone": 1} and merged["retried_rows"] == 2


def test_img2dataset_options_are_passed_through():
    arguments = img2dataset_arguments(DownloadConfig(min_image_size=64, max_aspect_ratio=3.0, verify_hash_column="h",
                                                     bbox_column="faces"), "in", "out")
    assert arguments["min_image_size"] == 64 and arguments["max_aspect_ratio"] == 3.0
    assert arguments["verify_hash"] == ["h", "sha256"] and arguments["bbox_col"] == "faces"
    assert img2dataset_arguments(DownloadConfig(), "in", "out")["max_aspect_ratio"] == float("inf")


@pytest.mark.slow
def test_a_stalled_job_stops_in_one_line_and_resumes(tmp_path, clean_env):
    with StallingServer() as server:
        server.stalled.set()
        write_balanced(tmp_path / "balanced", [f"{server.base}/img/{i}.jpg" for i in range(6)])
        started = time.monotonic()
        stalled = cli_download(tmp_path, "--timeout", "120", "--stall_seconds", "3", "--samples_per_shard", "3",
                               env=clean_env, timeout=100)
        assert time.monotonic() - started < 90  # not the 120 s per-URL deadline
        assert stalled.returncode == 2 and len(stalled.stderr.strip().splitlines()) == 1, stalled.stderr
        assert "wrote nothing for 3 s" in stalled.stderr and "run again to resume" in stalled.stderr
        group = json.loads((tmp_path / "shards.stats.json").read_text())
        assert not group["finished"]
        server.stalled.clear()
        again = cli_download(tmp_path, "--timeout", "120", "--stall_seconds", "3", "--samples_per_shard", "3",
                             env=clean_env)
        assert again.returncode == 0, again.stderr
        stats = json.loads((tmp_path / "shards.stats.json").read_text())
        assert stats["finished"] and stats["successes"] == 6
        assert not (tmp_path / "shards.lock").exists() or not group_alive(
            json.loads((tmp_path / "shards.lock").read_text()).get("process_group", 0))


@pytest.mark.slow
def test_retry_failed_fetches_only_retriable_failures_into_the_same_accounting(tmp_path, clean_env):
    with StallingServer() as server:
        good = [f"{server.base}/img/{i}.jpg" for i in range(4)]
        flaky = [f"{server.base}/flaky/{i}.jpg" for i in range(3)]
        gone = [f"{server.base}/gone/{i}.jpg" for i in range(2)]
        write_balanced(tmp_path / "balanced", good + flaky + gone)
        first = cli_download(tmp_path, "--samples_per_shard", "4", env=clean_env)
        assert first.returncode == 0, first.stderr
        before = json.loads((tmp_path / "shards.stats.json").read_text())
        assert before["successes"] == 4 and before["failed"] == 5
        retried = cli_download(tmp_path, "--samples_per_shard", "4", "--retry_failed", env=clean_env)
        assert retried.returncode == 0, retried.stderr
        stats = json.loads((tmp_path / "shards.stats.json").read_text())
        assert stats["finished"] and stats["input_rows"] == stats["rows_accounted"] == 9
        assert stats["successes"] == 7 and stats["failed"] == 2 and stats["retried_rows"] == 3
        assert stats["failure_reasons"] == {"HTTP Error 404: Not Found": 2}
        assert all(server.requests[url[len(server.base):]] == 1 for url in gone)  # a 404 is never fetched again
        assert all(server.requests[url[len(server.base):]] == 2 for url in flaky)
        assert stats["retry_rounds"][0]["first_shard"] == 3 and stats["retry_rounds"][0]["shards"] == ["00003"]
        assert samples_in_tars(tmp_path / "shards") == Counter(dict.fromkeys(good + flaky, 1))
        nothing = cli_download(tmp_path, "--samples_per_shard", "4", "--retry_failed", env=clean_env)
        assert nothing.returncode == 0 and "may pass on another try" in nothing.stderr + nothing.stdout


def test_a_download_of_the_matched_rows_without_query_ids_is_refused_before_it_starts():
    """Online curation reads each sample's query_ids: a matched download without them would be unusable."""
    with pytest.raises(CurationError, match="add query_ids to save_columns"):
        DownloadConfig(from_matched=True)
    assert DownloadConfig(from_matched=True, save_columns=["query_ids"]).from_matched
