"""Zero-shot segmentation during fit: a `data.zeroshot_sets` entry with `task: segmentation` logs MaskCLIP's mIoU
(`val/seg/<name>/mIoU`, `val/seg_mIoU`), equal to `clipmodule eval segmentation` on the same model."""

from __future__ import annotations

import lightning as L
import pytest

from clipmodule.data.datamodule import ShardDataModule
from clipmodule.data.synthetic import CLASSNAMES, write_synthetic_shards
from clipmodule.errors import ClipModuleError
from clipmodule.eval.readers import segmentation
from clipmodule.eval.readers.seg_specs import open_segmentation
from clipmodule.train.module import ClipLitModule, build_network

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def test_fit_logs_segmentation_miou_equal_to_eval(tmp_path, monkeypatch):
    from clipmodule.eval.tasks.segmentation import segmentation_eval

    monkeypatch.setattr(segmentation, "SHAPES_SEG_COUNT", 3)
    write_synthetic_shards(tmp_path / "train", 1, 32, image_size=32)
    (shard,) = write_synthetic_shards(tmp_path / "labelled", 1, 16, image_size=32, first_sample=5000)
    sets = {"shapes": {"data": "builtin:shapes-seg", "task": "segmentation", "templates": ["a {}."]}}
    datamodule = ShardDataModule(train_shards=str(tmp_path / "train"), zeroshot_shards=str(shard),
                                 zeroshot_classnames=CLASSNAMES, zeroshot_sets=sets, batch_size=16, num_workers=0,
                                 image_size=32, shuffle_buffer=16)
    assert [(opened.name, opened.task, opened.source) for opened in datamodule.validation_sets()] == [
        ("shapes", "segmentation", ("builtin:shapes-seg", None))]
    assert len(datamodule.val_dataloader()) == 1  # the zero-shot shards' loader; the segmentation set is read whole
    module = ClipLitModule(build_network("tiny-vit"), zeroshot_classnames=CLASSNAMES)
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=False, num_sanity_val_steps=0,
                        max_steps=2, val_check_interval=2, default_root_dir=tmp_path)
    trainer.fit(module, datamodule)
    metrics = {name: float(value) for name, value in trainer.callback_metrics.items()}
    direct = segmentation_eval(module.model, open_segmentation("builtin:shapes-seg"), ["a {}."])
    assert metrics["val/seg/shapes/mIoU"] == pytest.approx(direct["mIoU"], abs=1e-6)
    assert metrics["val/seg_mIoU"] == metrics["val/seg/shapes/mIoU"]
    assert metrics["val/seg/shapes/aAcc"] == pytest.approx(direct["aAcc"], abs=1e-6)


def test_a_set_of_an_unknown_kind_is_refused_before_the_first_step(tmp_path):
    write_synthetic_shards(tmp_path / "train", 1, 8, image_size=32)
    datamodule = ShardDataModule(train_shards=str(tmp_path / "train"), image_size=32, batch_size=4, num_workers=0,
                                 zeroshot_sets={"x": {"data": "builtin:shapes-seg", "task": "depth"}})
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=False, max_steps=1,
                        default_root_dir=tmp_path)
    module = ClipLitModule(build_network("tiny-vit"))
    with pytest.raises(ClipModuleError, match="data.zeroshot_sets.x: unknown task 'depth'"):
        trainer.fit(module, datamodule)
    assert module.global_step == 0


def test_a_fit_whose_only_validation_set_is_a_segmentation_set_validates(tmp_path, monkeypatch):
    monkeypatch.setattr(segmentation, "SHAPES_SEG_COUNT", 2)
    write_synthetic_shards(tmp_path / "train", 1, 16, image_size=32)
    sets = {"shapes": {"data": "builtin:shapes-seg", "task": "segmentation", "templates": ["a {}."]}}
    datamodule = ShardDataModule(train_shards=str(tmp_path / "train"), zeroshot_sets=sets, batch_size=8,
                                 num_workers=0, image_size=32, shuffle_buffer=8)
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=False, num_sanity_val_steps=0,
                        max_steps=2, val_check_interval=2, default_root_dir=tmp_path)
    trainer.fit(ClipLitModule(build_network("tiny-vit")), datamodule)
    assert 0 <= float(trainer.callback_metrics["val/seg_mIoU"]) <= 1  # no loader of its own: validated anyway
