"""Run by test_resume.py: a 2-rank gloo DDP fit of tiny-vit (patch dropout on, one loader worker per rank) over
shards, either straight through 8 steps (checkpointing at step 4, mid-epoch) or resumed from such a checkpoint.
Each rank writes the sample keys of its batches and its final weights to OUT/rank{r}.pt.

Usage: python ddp_resume_worker.py SHARDS OUT [--resume CHECKPOINT]"""

from __future__ import annotations

import argparse
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from clipmodule.data.datamodule import ShardDataModule
from clipmodule.train.callbacks import AtomicCheckpointIO
from clipmodule.train.module import ClipLitModule, build_network
from clipmodule.train.optim import OptimConfig


class KeyRecorder(Callback):
    def __init__(self):
        self.keys: list[list[str]] = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.keys.append(list(batch["key"]))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("shards")
    parser.add_argument("out", type=Path)
    parser.add_argument("--resume")
    args = parser.parse_args()
    torch.set_num_threads(1)
    L.seed_everything(7, verbose=False)
    module = ClipLitModule(build_network("tiny-vit", patch_dropout=0.5), optim=OptimConfig(lr=1e-3, warmup_steps=2))
    # 48 samples per epoch over 2 ranks of batch 4: 6 steps an epoch, so both runs cross an epoch boundary
    data = ShardDataModule(train_shards=args.shards, batch_size=4, num_workers=1, image_size=32, shuffle_buffer=8,
                           samples_per_epoch=48, seed=3)
    recorder = KeyRecorder()
    checkpoints = ModelCheckpoint(dirpath=args.out, every_n_train_steps=4, save_top_k=-1, filename="step{step}",
                                  auto_insert_metric_name=False)
    trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp", max_steps=8, logger=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        limit_val_batches=0, default_root_dir=args.out, callbacks=[recorder, checkpoints],
                        plugins=[AtomicCheckpointIO()])
    trainer.fit(module, data, ckpt_path=args.resume)
    weights = {name: value.detach().clone() for name, value in module.model.state_dict().items()}
    torch.save({"keys": recorder.keys, "weights": weights}, args.out / f"rank{trainer.global_rank}.pt")


if __name__ == "__main__":
    main()
