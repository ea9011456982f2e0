"""The main job end to end, shrunk: embedded web on 127.0.0.1 → curation build (img2dataset) → two fits →
held-out zero-shot → compare. Minutes, not more; the full version is `make demo`."""

import json

import pyarrow.parquet as pq
import pytest
from PIL import Image

from demo.app import DemoPlan, run_demo


@pytest.mark.timeout(900)
def test_shrunken_demo_learns_and_accounts_for_every_row(tmp_path):
    plan = DemoPlan.small(tmp_path / "demo")
    report = run_demo(plan)

    source_rows = json.loads((plan.out / "source" / "source.json").read_text())["rows"]
    stages = {stage: (rows_in, rows_out, dropped) for stage, rows_in, rows_out, dropped in report["accounting"]}
    assert stages["match"][0] == source_rows
    for stage, (rows_in, rows_out, dropped) in stages.items():
        assert rows_in == rows_out + dropped, stage
    assert stages["balance"][0] == stages["match"][1] and stages["download"][0] == stages["balance"][1]
    # Counted from what was planted, not from the stages' own stats: every broken URL that survived
    # balancing fails, every good one is downloaded.
    kept = pq.read_table(plan.out / "curation" / "balanced", columns=["family"])["family"].to_pylist()
    planted_broken = sum(family == "failing" for family in kept)
    assert planted_broken > 0
    assert stages["download"][2] == planted_broken and stages["download"][1] == len(kept) - planted_broken

    # the cap bites: the queries it cut most are reported with their rows before and after
    assert report["capped"] and all(kept < matched for _, matched, kept in report["capped"])
    assert stages["balance"][2] > 0

    chance = report["chance"]["emoji"]
    assert report["results"]["demo-clip"]["emoji"] >= 3 * chance
    assert report["results"]["demo-siglip"]["emoji"] >= 2 * chance

    compare_md = (plan.out / "compare" / "compare.md").read_text()
    assert "demo-clip" in compare_md and "demo-siglip" in compare_md and "heldout/emoji_top1" in compare_md
    for name in ("train_loss_vs_step", "train_loss_vs_samples", "val_zeroshot_top1_vs_step"):
        with Image.open(plan.out / "compare" / f"{name}.png") as image:
            assert image.width > 400
    assert (plan.out / "data_cards" / "demo.md").exists()
    index = json.loads((plan.out / "index" / "index.json").read_text())  # what `clipmodule serve` serves
    assert index["rows"] == stages["download"][1]
    concepts = json.loads((plan.out / "eval" / "concepts-demo-clip.json").read_text())  # `eval concepts` stage
    assert concepts["card"].endswith("demo.json") and len(concepts["classes"]) == plan.source.emoji_classes
