"""`curation build -c tiny_local.yaml` end to end, as a user runs it: real query list, real downloads, a card."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import yaml
from PIL import Image

CONFIG = Path(__file__).parents[2] / "experiments" / "datasets" / "tiny_local.yaml"


def test_build_runs_every_stage_then_is_a_no_op(tmp_path, image_server, caption_table, clean_env):
    work = tmp_path / "work"
    work.mkdir()
    pq.write_table(caption_table(image_server.base), work / "captions.parquet")
    settings = yaml.safe_load(CONFIG.read_text())
    settings.update(captions=[str(work / "captions.parquet")], work_dir=str(work), cards_dir=str(tmp_path / "cards"))
    config = tmp_path / "tiny_local.yaml"
    config.write_text(yaml.safe_dump(settings))
    command = [sys.executable, "-m", "curation", "build", "-c", str(config)]

    first = subprocess.run(command, env=clean_env, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0 and "Traceback" not in first.stderr, first.stderr
    card = json.loads((tmp_path / "cards" / "tiny_local.json").read_text())
    summary, download = card["summary"], card["download"]
    rows = pq.read_metadata(work / "captions.parquet").num_rows
    assert summary["caption_rows"] == rows and summary["matched_rows"] == rows - 2  # two captions match nothing
    assert 0 < summary["balanced_rows"] <= summary["matched_rows"] == card["balance"]["rows_in"]
    assert download["input_rows"] == summary["balanced_rows"]
    assert download["successes"] + download["failed"] == download["input_rows"] > 0
    assert sum(download["failure_reasons"].values()) == download["failed"]
    assert card["queries"]["terms"] >= 100_000 and card["balance"]["t"] == 4
    lines = "".join(f"{s['name']} {hashlib.sha256((work / 'shards' / s['name']).read_bytes()).hexdigest()}\n"
                    for s in card["shards"])
    assert card["content_hash"] == hashlib.sha256(lines.encode()).hexdigest()
    assert sum(s["samples"] for s in card["shards"]) == download["successes"]
    markdown = (tmp_path / "cards" / "tiny_local.md").read_text()
    for section in ("# Data card: tiny_local", "## Query list", "## Matching", "## Balancing", "## Download",
                    "## Shards", "## Configuration", "## Lineage", card["content_hash"]):
        assert section in markdown
    assert Image.open(tmp_path / "cards" / "tiny_local.png").size[0] > 300

    before = {p.name: p.read_bytes() for p in (tmp_path / "cards").iterdir()}
    second = subprocess.run(command, env=clean_env, capture_output=True, text=True, timeout=120)
    assert second.returncode == 0, second.stderr
    assert second.stderr.count("up to date") == 4  # queries, match, balance, download
    assert {p.name: p.read_bytes() for p in (tmp_path / "cards").iterdir()} == before
