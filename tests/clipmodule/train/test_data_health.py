"""The corrupt-data counters logged during training are run totals: summed over epochs, carried over a resume."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from clipmodule.data.datamodule import ShardDataModule
from clipmodule.data.synthetic import write_synthetic_shards
from clipmodule.train.callbacks import AtomicCheckpointIO, DataHealth
from clipmodule.train.module import ClipLitModule, build_network
from clipmodule.train.optim import OptimConfig
from tests.clipmodule.train.test_bad_data import write_bad_shards


def _data(folder: Path) -> ShardDataModule:
    return ShardDataModule(train_shards=str(folder), batch_size=4, num_workers=0, image_size=32, shuffle_buffer=8,
                           samples_per_epoch=16, seed=1)


def _expected_per_epoch(folder: Path, epochs: int) -> list[int]:
    """What the reader skips in each epoch, counted by iterating the dataset itself (no trainer, no callback)."""
    dataset = _data(folder).train_dataset()
    counts = []
    for epoch in range(epochs):
        dataset.set_epoch(epoch)
        samples = iter(dataset)
        for _ in range(len(dataset)):
            next(samples)
        counts.append(samples.corrupt_samples)
    return counts


def _fit(folder: Path, root: Path, ckpt_path: Path | None = None) -> L.Trainer:
    torch.manual_seed(0)
    callbacks = [DataHealth(every_n_steps=1),
                 ModelCheckpoint(dirpath=root, every_n_train_steps=6, save_top_k=-1, filename="step{step}",
                                 auto_insert_metric_name=False)]
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=8, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
                        default_root_dir=root, callbacks=callbacks, plugins=[AtomicCheckpointIO()])
    module = ClipLitModule(build_network("tiny-vit"), optim=OptimConfig(warmup_steps=1))
    trainer.fit(module, _data(folder), ckpt_path=ckpt_path)
    return trainer


def test_corrupt_counts_add_up_over_epochs_and_survive_a_resume(tmp_path):
    folder = tmp_path / "shards"
    write_synthetic_shards(folder, 2, 8, image_size=32)
    write_bad_shards(tmp_path / "bad", "image", shards=1, samples=4)
    (tmp_path / "bad" / "00000.tar").rename(folder / "bad.tar")
    per_epoch = _expected_per_epoch(folder, 2)  # 16 samples an epoch, 4 steps: max_steps 8 is 2 epochs
    assert all(count > 0 for count in per_epoch), per_epoch

    straight = _fit(folder, tmp_path / "a")
    assert float(straight.callback_metrics["data/corrupt_samples"]) == sum(per_epoch)

    # resumed from the straight run's checkpoint at step 6, in the second epoch
    resumed = _fit(folder, tmp_path / "b", ckpt_path=tmp_path / "a" / "step6.ckpt")
    assert resumed.global_step == 8
    assert float(resumed.callback_metrics["data/corrupt_samples"]) == sum(per_epoch)
    assert float(resumed.callback_metrics["data/corrupt_shards"]) == 0
