"""The EMA of the weights (`model.ema`): timm's ModelEmaV3 arithmetic, validation beside the live weights, exact
resume (with a distillation teacher too), and the exported checkpoint."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from timm.utils.model_ema import ModelEmaV3

import clipmodule
from clipmodule.checkpoints.io import save_checkpoint
from clipmodule.data.datamodule import ShardDataModule
from clipmodule.data.synthetic import CLASSNAMES, write_synthetic_shards
from clipmodule.train.callbacks import AtomicCheckpointIO
from clipmodule.train.distill import DistillConfig
from clipmodule.train.ema import EmaCallback, EmaConfig, WeightAverage
from clipmodule.train.ema import main as ema_export
from clipmodule.train.module import ClipLitModule, build_network
from clipmodule.train.optim import OptimConfig
from tests.clipmodule.fixtures import SyntheticDataModule

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.mark.parametrize("config", [EmaConfig(decay=0.9, update_after_step=2),
                                    EmaConfig(decay=0.99, warmup=True, warmup_power=0.75, min_decay=0.1)])
def test_the_average_equals_timms_model_ema_v3(config):
    torch.manual_seed(0)
    network = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Linear(6, 2))
    theirs = ModelEmaV3(network, decay=config.decay, min_decay=config.min_decay,
                        update_after_step=config.update_after_step, use_warmup=config.warmup,
                        warmup_gamma=config.warmup_gamma, warmup_power=config.warmup_power)
    ours = WeightAverage(network, config)
    for step in range(1, 9):
        with torch.no_grad():
            for parameter in network.parameters():
                parameter.add_(torch.randn_like(parameter))
        network(torch.randn(2, 3, 8, 8))  # BatchNorm's running statistics and counter move too
        theirs.update(network, step=step)
        ours.update(network, step)
        for (name, mine), peer in zip(ours.network.state_dict().items(), theirs.module.state_dict().values()):
            assert torch.equal(mine, peer), f"step {step}: {name}"


def _trainer(tmp_path: Path, **options) -> L.Trainer:
    defaults = dict(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
                    num_sanity_val_steps=0, default_root_dir=tmp_path, plugins=[AtomicCheckpointIO()])
    return L.Trainer(**{**defaults, **options})


def _ema_of(trainer: L.Trainer) -> dict[str, torch.Tensor]:
    (callback,) = [c for c in trainer.callbacks if isinstance(c, EmaCallback)]
    return callback.average.state_dict()


def test_the_average_is_validated_beside_the_live_weights(tmp_path):
    torch.manual_seed(0)
    module = ClipLitModule(build_network("tiny-vit"), optim=OptimConfig(lr=1e-3, warmup_steps=1),
                           ema=EmaConfig(decay=0.5), zeroshot_classnames=CLASSNAMES)
    trainer = _trainer(tmp_path, max_steps=2, limit_val_batches=1, enable_checkpointing=False)
    trainer.fit(module, SyntheticDataModule(num_samples=32, batch_size=16, image_size=32, context_length=24))
    metrics = trainer.callback_metrics
    for name in ("zeroshot_top1", "image_to_text_R1"):
        assert 0.0 <= float(metrics[f"val/{name}"]) <= 1.0 and 0.0 <= float(metrics[f"val_ema/{name}"]) <= 1.0
    live, averaged = module.model.state_dict(), _ema_of(trainer)
    assert not torch.equal(live["visual.proj"], averaged["visual.proj"])
    assert module.hparams["ema"]["decay"] == 0.5


def test_validate_with_a_checkpoint_reports_its_average(tmp_path):
    """`clipmodule validate --ckpt_path` (Trainer.validate): val_ema/* are the checkpoint's average (equal to its
    exported weights validated as the live ones), val/* its live weights."""
    torch.manual_seed(0)
    data = SyntheticDataModule(num_samples=32, batch_size=16, image_size=32, context_length=24)

    def module(ema: EmaConfig | None) -> ClipLitModule:
        return ClipLitModule(build_network("tiny-vit"), optim=OptimConfig(lr=1e-2, warmup_steps=1), ema=ema,
                             zeroshot_classnames=CLASSNAMES)

    trainer = _trainer(tmp_path, max_steps=3, limit_val_batches=0, enable_checkpointing=False)
    trainer.fit(module(EmaConfig(decay=0.5)), data)
    checkpoint = tmp_path / "fit.ckpt"
    trainer.save_checkpoint(checkpoint)

    def validate(ema: EmaConfig | None, path: Path) -> dict[str, float]:
        per_loader = _trainer(tmp_path, limit_val_batches=2).validate(module(ema), data, ckpt_path=path)
        return {name.split("/dataloader_idx")[0]: value for metrics in per_loader for name, value in metrics.items()}

    averaged = validate(EmaConfig(decay=0.5), checkpoint)
    assert ema_export([str(checkpoint), str(tmp_path / "ema.ckpt")]) == 0
    exported, live = validate(None, tmp_path / "ema.ckpt"), validate(None, checkpoint)
    names = [name for name in exported if name.startswith("val/")]
    assert names and all(f"val_ema/{name[4:]}" in averaged for name in names)
    assert {name: averaged[f"val_ema/{name[4:]}"] for name in names} == {name: exported[name] for name in names}
    assert {name: averaged[name] for name in names} == {name: live[name] for name in names}
    assert averaged != {**averaged, **{f"val_ema/{name[4:]}": live[name] for name in names}}  # the two differ


class StopAfter(Callback):
    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, *args):
        if trainer.global_step >= self.step:
            trainer.should_stop = True


def _run(tmp_path: Path, shards: Path, teacher: Path, stop: int = 0, ckpt_path: Path | None = None):
    torch.manual_seed(7)
    module = ClipLitModule(build_network("tiny-vit", patch_dropout=0.5), optim=OptimConfig(lr=1e-3, warmup_steps=2),
                           ema=EmaConfig(decay=0.8, warmup=True), distill=DistillConfig(str(teacher)))
    data = ShardDataModule(train_shards=str(shards), batch_size=8, num_workers=1, image_size=32, shuffle_buffer=16,
                           seed=3)
    callbacks = [StopAfter(stop), ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=stop,
                                                  filename="step{step}", auto_insert_metric_name=False)] if stop else []
    trainer = _trainer(tmp_path, max_steps=8, callbacks=callbacks, enable_checkpointing=bool(stop),
                       limit_val_batches=0)
    trainer.fit(module, data, ckpt_path=ckpt_path)
    return trainer, module


@pytest.mark.slow
def test_resume_restores_the_average_exactly_and_export_gives_its_weights(tmp_path):
    """With a teacher too (model.distill): it is reloaded from its file, and the run goes on as if unbroken."""
    shards = tmp_path / "shards"
    write_synthetic_shards(shards, 2, 16, image_size=32)
    torch.manual_seed(5)
    teacher = save_checkpoint(build_network("tiny-vit"), tmp_path / "teacher.safetensors")
    trainer, straight_module = _run(tmp_path / "a", shards, teacher)
    straight = _ema_of(trainer)
    _run(tmp_path / "b", shards, teacher, stop=4)
    checkpoint = tmp_path / "b" / "ckpt" / "step4.ckpt"
    trainer, resumed_module = _run(tmp_path / "b", shards, teacher, ckpt_path=checkpoint)
    resumed = _ema_of(trainer)
    for name, value in straight.items():
        assert torch.equal(value, resumed[name]), f"{name} differs by {(value - resumed[name]).abs().max()}"
    for (name, value), other in zip(straight_module.state_dict().items(), resumed_module.state_dict().values()):
        assert torch.equal(value, other), name
    at_four = torch.load(checkpoint, weights_only=True)["callbacks"]["EmaCallback"]["weights"]
    assert ema_export([str(checkpoint), str(tmp_path / "ema.ckpt")]) == 0
    exported = tmp_path / "ema.ckpt"
    model, _ = clipmodule.load(str(exported))
    for name, value in model.state_dict().items():
        assert torch.equal(value, at_four[name]), name
