"""A fit with LoRA adapters (dropout on) and hard negatives, stopped and resumed mid-epoch, ends with the weights
of the unbroken fit: the adapters, their optimiser state, the dropout's random state and each sample's negatives
all come back."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from clipmodule.data.datamodule import ShardDataModule
from clipmodule.data.synthetic import write_synthetic_shards
from clipmodule.models.lora import LoRAConfig
from clipmodule.train.callbacks import AtomicCheckpointIO
from clipmodule.train.hard_negatives import HardNegativesConfig
from clipmodule.train.module import ClipLitModule, build_network
from clipmodule.train.optim import OptimConfig
from tests.clipmodule.train.wordnet_files import write_wordnet

pytestmark = pytest.mark.usefixtures("one_thread")


class StopAfter(Callback):
    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, *args):
        if trainer.global_step >= self.step:
            trainer.should_stop = True


def _run(folder: Path, shards: Path, wordnet: Path, stop: int = 0, ckpt_path: Path | None = None):
    torch.manual_seed(7)
    module = ClipLitModule(build_network("tiny-vit"), optim=OptimConfig(lr=1e-2, warmup_steps=2),
                           lora=LoRAConfig(rank=2, dropout=0.2, targets=("q", "v", "fc1")),
                           hard_negatives=HardNegativesConfig(count=2, wordnet_dir=str(wordnet)))
    data = ShardDataModule(train_shards=str(shards), batch_size=8, num_workers=1, image_size=32, shuffle_buffer=16,
                           seed=3)
    callbacks: list[Callback] = [ModelCheckpoint(dirpath=folder / "ckpt", every_n_train_steps=3, save_top_k=-1,
                                                 filename="step{step}", auto_insert_metric_name=False)]
    callbacks += [StopAfter(stop)] if stop else []
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0, max_steps=7,
                        default_root_dir=folder, plugins=[AtomicCheckpointIO()], callbacks=callbacks)
    trainer.fit(module, data, ckpt_path=ckpt_path)
    return module, trainer


@pytest.mark.slow  # three short fits: about 20 s on the shared cores
def test_a_lora_fit_with_hard_negatives_resumes_to_the_unbroken_weights(tmp_path):
    shards, wordnet = tmp_path / "shards", write_wordnet(tmp_path / "wordnet")
    write_synthetic_shards(shards, 2, 20, image_size=32)  # 40 samples: 5 steps an epoch, the runs cross one
    straight, _ = _run(tmp_path / "a", shards, wordnet)
    _run(tmp_path / "b", shards, wordnet, stop=3)
    resumed, trainer = _run(tmp_path / "b", shards, wordnet, ckpt_path=tmp_path / "b" / "ckpt" / "step3.ckpt")
    assert trainer.global_step == 7
    adapters = 0
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), f"{name} differs by {(a - b).abs().max()}"
        adapters += name.endswith("lora.b")
    assert adapters == 2 * 2 * 2  # 2 towers x 2 blocks x (packed q/v, fc1)
    assert resumed.negative_captions.lexicon is not None  # the negatives were made
    # the adapters trained (B left zero), the base weights did not
    assert resumed.model.transformer.resblocks[0].attn.in_proj_lora.b.abs().sum() > 0
    torch.manual_seed(7)
    base = build_network("tiny-vit")
    assert torch.equal(resumed.model.visual.proj, base.visual.proj)
