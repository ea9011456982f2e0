"""`curation build` with the optional stages (embed -> filter -> dedup -> decontaminate) from the example YAML: the
card covers each, its content hash is the last stage's shards, and a second build is a no-op."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
import yaml

import clipmodule

CONFIG = Path(__file__).parents[2] / "experiments" / "datasets" / "tiny_local_curated.yaml"


@pytest.mark.slow
def test_build_with_optional_stages_then_a_no_op(tmp_path, image_server, caption_table, clean_env):
    work = tmp_path / "work"
    (work / "eval").mkdir(parents=True)
    pq.write_table(caption_table(image_server.base), work / "captions.parquet")
    with urllib.request.urlopen(f"{image_server.base}/img/0/red_circle.jpg") as reply:  # an eval copy
        (work / "eval" / "red_circle.jpg").write_bytes(reply.read())
    torch.manual_seed(0)
    clipmodule.save_checkpoint(clipmodule.create_model("tiny-vit"), work / "tiny.safetensors")
    settings = yaml.safe_load(CONFIG.read_text())
    settings.update(captions=[str(work / "captions.parquet")], work_dir=str(work), cards_dir=str(tmp_path / "cards"),
                    eval_sets=[str(work / "eval")])
    settings["embed"]["model"] = str(work / "tiny.safetensors")
    config = tmp_path / "curated.yaml"
    config.write_text(yaml.safe_dump(settings))
    command = [sys.executable, "-m", "curation", "build", "-c", str(config)]

    first = subprocess.run(command, env=clean_env, capture_output=True, text=True, timeout=900)
    assert first.returncode == 0 and "Traceback" not in first.stderr, first.stderr
    card = json.loads((tmp_path / "cards" / "tiny_local_curated.json").read_text())
    summary = card["summary"]
    assert card["embeddings"]["rows_out"] == summary["images"]
    assert card["filter"]["rows_in"] == summary["images"]
    assert card["filter"]["rows_kept"] + sum(card["filter"]["dropped_by_reason"].values()) == summary["images"]
    assert card["dedup"]["rows_in"] == summary["filtered_images"] > summary["deduplicated_images"]
    assert card["decontamination"]["samples_in"] == summary["deduplicated_images"]
    assert card["decontamination"]["samples_dropped"] >= 1  # the red circle the eval folder holds
    assert [s["stage"] for s in card["lineage"]["stages"]] == ["embed", "filter", "dedup", "decontaminate"]
    lines = "".join(f"{s['name']} {hashlib.sha256((work / 'decontaminated' / s['name']).read_bytes()).hexdigest()}\n"
                    for s in card["shards"])
    assert card["content_hash"] == hashlib.sha256(lines.encode()).hexdigest()
    assert sum(s["samples"] for s in card["shards"]) == summary["decontaminated_images"]
    markdown = (tmp_path / "cards" / "tiny_local_curated.md").read_text()
    for section in ("## Embeddings", "## Filter", "## Deduplication", "## Decontamination",
                    "![CLIP-score histogram](tiny_local_curated.filter.png)", "After download: embed"):
        assert section in markdown
    assert (tmp_path / "cards" / "tiny_local_curated.filter.png").stat().st_size > 1000

    before = {p.name: p.read_bytes() for p in (tmp_path / "cards").iterdir()}
    second = subprocess.run(command, env=clean_env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr
    assert second.stderr.count("up to date") == 8, second.stderr
    assert {p.name: p.read_bytes() for p in (tmp_path / "cards").iterdir()} == before
