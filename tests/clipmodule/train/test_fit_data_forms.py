"""`clipmodule fit` from a YAML naming a weighted mixture of a CSV (with broken rows) and shards, and a named
zero-shot set in an ImageNet-style folder: it trains, counts the bad rows and logs the set under its name."""

from __future__ import annotations

import torch
import yaml

from clipmodule.data.synthetic import CLASSNAMES, write_synthetic_shards
from tests.clipmodule.data.test_tables import write_csv, write_pairs
from tests.clipmodule.train.test_cli import TINY, _runs, clipmodule
from tests.clipmodule.train.test_validation import _folders_from_shard


def test_fit_on_a_mixture_with_a_csv_and_a_zeroshot_folder_from_yaml(tmp_path):
    write_synthetic_shards(tmp_path / "shards", 2, 32, image_size=32)
    pairs = write_pairs(tmp_path / "csv")
    pairs[1] = ("images/gone.jpg", pairs[1][1])  # a missing image
    pairs[5] = (pairs[5][0], "")  # an empty caption
    csv = write_csv(tmp_path / "csv" / "pairs.csv", pairs, header=("path", "caption"))
    (shard,) = write_synthetic_shards(tmp_path / "labelled", 1, 48, image_size=32, first_sample=5000)
    _folders_from_shard(shard, tmp_path / "imagenet_style", lambda label: f"n{label:08d}")
    (tmp_path / "names.txt").write_text("\n".join(CLASSNAMES) + "\n")
    run = tmp_path / "run.yaml"
    run.write_text(yaml.safe_dump({
        "trainer": {"max_steps": 4, "val_check_interval": 4, "log_every_n_steps": 1},
        "data": {"train_shards": [{"shards": str(csv), "weight": 0.5, "name": "mine"},
                                  {"shards": str(tmp_path / "shards"), "weight": 0.5, "name": "web"}],
                 "zeroshot_sets": {"folder": {"data": str(tmp_path / "imagenet_style"),
                                              "classnames": str(tmp_path / "names.txt")}},
                 "batch_size": 16, "num_workers": 0},
        "checkpoint": {"every_n_train_steps": 4}}))
    done = clipmodule(["fit", *TINY, "-c", str(run)], cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "pairs.csv:2:images/gone.jpg (No such file or directory)" in done.stderr
    _, (record,) = _runs(tmp_path, "tiny_cpu")
    assert record.info.status == "FINISHED"
    metrics = record.data.metrics
    assert 0.0 <= metrics["val/zeroshot/folder/top1"] <= metrics["val/zeroshot/folder/top5"] <= 1.0
    assert metrics["data/corrupt_samples"] >= 1
    # the checkpoint holds the options as plain data: it loads weights-only (so --ckpt_path resumes the run)
    checkpoint = torch.load(tmp_path / record.data.tags["run_folder"] / "checkpoints" / "last.ckpt", weights_only=True)
    options = checkpoint["datamodule_hyper_parameters"]
    assert options["train_shards"][0] == {"shards": str(csv), "weight": 0.5, "name": "mine", "csv_image_key": None,
                                          "csv_caption_key": None}
    assert options["zeroshot_sets"]["folder"]["classnames"] == str(tmp_path / "names.txt")
