"""Zero-shot during fit on several named sets: labelled shards and ImageNet-style class folders, each logged under
its own name, equal to `clipmodule eval zeroshot` on the same images."""

from __future__ import annotations

import dataclasses
import random
import tarfile
from pathlib import Path

import lightning as L
import pytest
import torch

from clipmodule.data.datamodule import ShardDataModule
from clipmodule.data.synthetic import CLASSNAMES, write_synthetic_shards
from clipmodule.errors import ClipModuleError
from clipmodule.train.module import ClipLitModule, build_network

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

TEMPLATES = ["a photo of a {}.", "a drawing of a {}."]


def _folders_from_shard(shard: Path, root: Path, folder_of) -> None:
    """The shard's images (the same bytes) under root/<folder_of(label)>/<key>.jpg: an ImageNet-style folder."""
    import json

    for label in range(len(CLASSNAMES)):  # every class has its folder, even one without a sample here
        (root / folder_of(label)).mkdir(parents=True)
    with tarfile.open(shard) as tar:
        members = {member.name: tar.extractfile(member).read() for member in tar.getmembers()}
    for name, data in members.items():
        if name.endswith(".json"):
            key = name[: -len(".json")]
            folder = root / folder_of(json.loads(data)["label"])
            (folder / f"{key}.jpg").write_bytes(members[f"{key}.jpg"])


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("zeroshot_sets")
    write_synthetic_shards(root / "train", 2, 32, image_size=32)
    (shard,) = write_synthetic_shards(root / "labelled", 1, 48, image_size=32, first_sample=5000)  # all 12 classes
    # wnid-like folders (n00000000 ...) with a names file in sorted-folder order, as ImageNet's val set
    _folders_from_shard(shard, root / "wnids", lambda label: f"n{label:08d}")
    (root / "names.txt").write_text("\n".join(CLASSNAMES) + "\n")
    # folders named after the classes, with the names given in another order: labelled by name
    _folders_from_shard(shard, root / "named", lambda label: CLASSNAMES[label].replace(" ", "_"))
    return {"root": root, "shard": shard}


def test_fit_reports_every_set_under_its_name_and_each_equals_eval_zeroshot(data, tmp_path):
    from clipmodule.eval.readers import open_classification
    from clipmodule.eval.tasks import zeroshot_classification
    from clipmodule.transforms import image_transform

    root = data["root"]
    shuffled = random.Random(0).sample(CLASSNAMES, len(CLASSNAMES))
    sets = {"labelled": {"data": str(data["shard"]), "classnames": CLASSNAMES},
            "wnids": {"data": str(root / "wnids"), "classnames": str(root / "names.txt")},
            "named": {"data": str(root / "named"), "classnames": shuffled, "templates": TEMPLATES[:1]}}
    datamodule = ShardDataModule(train_shards=str(root / "train"), zeroshot_shards=str(data["shard"]),
                                 zeroshot_classnames=CLASSNAMES, zeroshot_sets=sets, batch_size=16, num_workers=0,
                                 image_size=32, shuffle_buffer=32)
    module = ClipLitModule(build_network("tiny-vit"), zeroshot_classnames=CLASSNAMES, zeroshot_templates=TEMPLATES)
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=False, num_sanity_val_steps=0,
                        max_steps=3, val_check_interval=3, default_root_dir=tmp_path)
    trainer.fit(module, datamodule)
    metrics = {name: float(value) for name, value in trainer.callback_metrics.items()}
    for name in ("labelled", "wnids", "named"):
        assert 0.0 <= metrics[f"val/zeroshot/{name}/top1"] <= metrics[f"val/zeroshot/{name}/top5"] <= 1.0
    # the single-set options keep their metric names; the same images under another layout score the same
    assert metrics["val/zeroshot_top1"] == metrics["val/zeroshot/labelled/top1"] == metrics["val/zeroshot/wnids/top1"]
    transform = image_transform(32, train=False)
    for name, folder, names, templates in (("wnids", root / "wnids", CLASSNAMES, TEMPLATES),
                                           ("named", root / "named", shuffled, TEMPLATES[:1])):
        direct = zeroshot_classification(module.model, open_classification(str(folder), transform, names), names,
                                         templates)
        assert metrics[f"val/zeroshot/{name}/top1"] == pytest.approx(direct["top1"], abs=1e-6), name
        assert metrics[f"val/zeroshot/{name}/top5"] == pytest.approx(direct["top5"], abs=1e-6), name


def test_a_bad_set_is_refused_when_the_datamodule_is_built(data, tmp_path):
    root = data["root"]
    for sets, message in (
        ({"wnids": {"data": str(root / "wnids"), "classnames": CLASSNAMES[:5]}}, "12 class folders but 5 class names"),
        ({"wnids": {"data": str(root / "wnids"), "classnames": str(tmp_path / "none.txt")}}, "no such class-name file"),
        ({"labelled": {"data": str(data["shard"])}}, "shards carry class indices; give the class names"),
        ({"bad name": {"data": str(root / "wnids")}}, "is not a metric name"),
    ):
        with pytest.raises(ClipModuleError, match=message):
            ShardDataModule(zeroshot_sets=sets)


class _CountTracker:
    """A throwaway kind's tracker: counts the images of its set."""

    def __init__(self, tracked):
        self.name, self.count = tracked.name, 0

    def update(self, batch):
        self.count += len(batch["image"])

    def results(self):
        return {f"val/count/{self.name}": torch.tensor(float(self.count))}


def test_fit_tracks_a_set_through_its_kinds_tracker_and_refuses_an_untrackable_kind(data, tmp_path, monkeypatch):
    from clipmodule.eval import tasks
    from clipmodule.eval.tasks import TaskKind

    counting = TaskKind(name="count", data_keys=("dataset",), open=lambda spec, preprocess: (), run=None,
                        tracker=_CountTracker)
    monkeypatch.setitem(tasks._KINDS, "count", counting)
    sets = {"pictures": {"data": str(data["shard"]), "classnames": CLASSNAMES, "task": "count"}}

    def fit(sets):
        datamodule = ShardDataModule(train_shards=str(data["root"] / "train"), zeroshot_sets=sets, batch_size=16,
                                     num_workers=0, image_size=32, shuffle_buffer=32)
        trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                            enable_model_summary=False, enable_checkpointing=False, num_sanity_val_steps=0,
                            max_steps=1, val_check_interval=1, default_root_dir=tmp_path)
        trainer.fit(ClipLitModule(build_network("tiny-vit")), datamodule)
        return {name: float(value) for name, value in trainer.callback_metrics.items()}

    assert fit(sets)["val/count/pictures"] == 48  # every image of the set, through the registry's tracker
    monkeypatch.setitem(tasks._KINDS, "count", dataclasses.replace(counting, tracker=None))
    with pytest.raises(ClipModuleError, match="data.zeroshot_sets.pictures: task 'count' cannot be tracked"):
        fit(sets)
    with pytest.raises(ClipModuleError, match="data.zeroshot_sets.pictures: unknown task 'nothing'"):
        fit({"pictures": {**sets["pictures"], "task": "nothing"}})
