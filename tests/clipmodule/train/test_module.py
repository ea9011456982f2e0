"""The LightningModule under a real Trainer: learning, the optimiser's rules, stopping on NaN, exact resume."""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from clipmodule.data.datamodule import ShardDataModule
from clipmodule.data.synthetic import CLASSNAMES, write_synthetic_shards
from clipmodule.errors import ClipModuleError
from clipmodule.train.callbacks import AtomicCheckpointIO
from clipmodule.train.module import ClipLitModule, build_network
from clipmodule.train.optim import OptimConfig, WarmupCosine, parameter_groups
from clipmodule.transforms import normalize_batch
from tests.clipmodule.fixtures import SyntheticDataModule

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _trainer(tmp_path: Path, **options) -> L.Trainer:
    defaults = dict(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                    enable_model_summary=False, num_sanity_val_steps=0, default_root_dir=tmp_path,
                    plugins=[AtomicCheckpointIO()])
    return L.Trainer(**{**defaults, **options})


class LossRecorder(Callback):
    def __init__(self):
        self.losses, self.keys = [], []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.losses.append(float(outputs["loss"]))
        self.keys.append(list(batch.get("key", [])))


def test_training_lowers_the_loss_and_validation_reports_zeroshot_and_retrieval(tmp_path):
    torch.manual_seed(0)
    module = ClipLitModule(build_network("tiny-vit"), optim=OptimConfig(lr=2e-3, warmup_steps=3, weight_decay=0.0),
                           zeroshot_classnames=CLASSNAMES)
    recorder = LossRecorder()
    trainer = _trainer(tmp_path, max_epochs=6, callbacks=[recorder], enable_checkpointing=False)
    trainer.fit(module, SyntheticDataModule(num_samples=48, batch_size=16, image_size=32))
    first, last = sum(recorder.losses[:3]) / 3, sum(recorder.losses[-3:]) / 3
    assert last < first - 0.3, recorder.losses
    metrics = trainer.callback_metrics
    for name in ("val/zeroshot_top1", "val/zeroshot_top5", "val/image_to_text_R1", "val/text_to_image_R10"):
        assert 0.0 <= float(metrics[name]) <= 1.0
    assert float(metrics["val/zeroshot_top5"]) >= float(metrics["val/zeroshot_top1"])


class PushScaleUp(Callback):
    """Gives the log scale a gradient that raises it by about the learning rate each step (Adam normalises)."""

    def on_before_optimizer_step(self, trainer, module, optimizer):
        module.model.logit_scale.grad = torch.full_like(module.model.logit_scale, -1.0)


def test_logit_scale_is_clamped_at_100_after_each_step(tmp_path):
    network = build_network("tiny-vit")
    module = ClipLitModule(network, optim=OptimConfig(lr=0.5, warmup_steps=1))
    with torch.no_grad():
        network.logit_scale.fill_(math.log(100.0) - 0.1)
    _trainer(tmp_path, max_steps=3, enable_checkpointing=False, limit_val_batches=0,
             callbacks=[PushScaleUp()]).fit(module, SyntheticDataModule(num_samples=48, batch_size=16, image_size=32))
    # unclamped, three steps of +0.5 would end near log(100) + 1.4
    assert network.logit_scale.item() == pytest.approx(math.log(100.0), abs=1e-6)


def test_weight_decay_spares_gains_biases_and_the_logit_scale():
    network = build_network("tiny-vit", init_logit_bias=-10.0)
    decayed, exempt = parameter_groups(network, 0.2)
    names = {id(p): n for n, p in network.named_parameters()}
    exempt_names = {names[id(p)] for p in exempt["params"]}
    assert {"logit_scale", "logit_bias"} <= exempt_names
    assert all(p.ndim >= 2 for p in decayed["params"]) and decayed["weight_decay"] == 0.2
    assert any(name.endswith(".bias") for name in exempt_names) and exempt["weight_decay"] == 0.0


def test_schedule_warms_up_linearly_then_decays_by_cosine():
    schedule = WarmupCosine(warmup=10, total=110, floor=0.1)
    assert schedule(0) == pytest.approx(0.1) and schedule(9) == pytest.approx(1.0)
    assert schedule(60) == pytest.approx(0.1 + 0.9 * 0.5)
    assert schedule(110) == pytest.approx(0.1) and schedule(500) == pytest.approx(0.1)


def test_siglip_needs_a_logit_bias():
    with pytest.raises(ClipModuleError, match="init_logit_bias"):
        ClipLitModule(build_network("tiny-vit"), loss="siglip")


class PoisonAt(Callback):
    """Turns the image tower's weights into NaN before the given step."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if trainer.global_step == self.step:
            with torch.no_grad():
                module.model.visual.conv1.weight.fill_(float("nan"))


def test_a_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(tmp_path):
    module = ClipLitModule(build_network("tiny-vit"), optim=OptimConfig(warmup_steps=1))
    checkpoints = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=2, save_last=True, save_top_k=-1)
    trainer = _trainer(tmp_path, max_steps=20, callbacks=[checkpoints, PoisonAt(5)], limit_val_batches=0)
    with pytest.raises(ClipModuleError, match="non-finite loss .* at step 5"):
        trainer.fit(module, SyntheticDataModule(num_samples=64, batch_size=16, image_size=32))
    last = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 4
    assert all(torch.isfinite(v).all() for v in last["state_dict"].values() if v.is_floating_point())
    assert not list((tmp_path / "ckpt").glob("*.tmp*"))


class StopAfter(Callback):
    """Ends the run after `step` optimiser steps, as a pre-empted job would (same schedule length)."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, *args):
        if trainer.global_step >= self.step:
            trainer.should_stop = True


def _resume_run(tmp_path: Path, shards: Path, stop: int = 0, ckpt_path: Path | None = None, every: int = 0):
    torch.manual_seed(7)
    module = ClipLitModule(build_network("tiny-vit", patch_dropout=0.5), optim=OptimConfig(lr=1e-3, warmup_steps=2))
    data = ShardDataModule(train_shards=str(shards), batch_size=8, num_workers=2, image_size=32,
                           shuffle_buffer=16, seed=3)
    recorder = LossRecorder()
    callbacks = [recorder, StopAfter(stop)] if stop else [recorder]
    if every:
        callbacks.append(ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=every, save_top_k=-1,
                                         filename="step{step}", auto_insert_metric_name=False))
    trainer = _trainer(tmp_path, max_steps=12, callbacks=callbacks, enable_checkpointing=bool(every),
                       limit_val_batches=0)
    trainer.fit(module, data, ckpt_path=ckpt_path)
    return module, recorder


def test_resume_mid_epoch_gives_the_same_weights_and_sample_order_as_an_unbroken_run(tmp_path):
    shards = tmp_path / "shards"
    write_synthetic_shards(shards, 4, 16, image_size=32)  # 64 samples: 8 batches per epoch
    straight, straight_log = _resume_run(tmp_path / "a", shards)
    _, first_log = _resume_run(tmp_path / "b", shards, stop=6, every=6)
    checkpoint = tmp_path / "b" / "ckpt" / "step6.ckpt"
    resumed, resumed_log = _resume_run(tmp_path / "b", shards, ckpt_path=checkpoint)
    assert first_log.keys + resumed_log.keys == straight_log.keys  # crosses the epoch boundary at step 8
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), f"{name} differs by {(a - b).abs().max()}"


def _options_run(tmp_path: Path, precision: str, grad_checkpointing: bool) -> tuple[list[float], ClipLitModule]:
    torch.manual_seed(0)
    network = build_network("tiny-vit", patch_dropout=0.5, init_logit_scale=math.log(10), init_logit_bias=-10.0)
    module = ClipLitModule(network, loss="siglip", grad_checkpointing=grad_checkpointing,
                           optim=OptimConfig(warmup_steps=1), accum_freq=2)
    recorder = LossRecorder()
    trainer = _trainer(tmp_path, max_steps=2, precision=precision,
                       callbacks=[recorder], enable_checkpointing=False, limit_val_batches=0)
    trainer.fit(module, SyntheticDataModule(num_samples=64, batch_size=16, image_size=32))
    assert trainer.global_step == 2 and len(recorder.losses) == 2
    return recorder.losses, module


def test_training_options_bf16_accumulation_checkpointing_patch_dropout_and_siglip_agree(tmp_path):
    """The same 4 micro-batches (2 steps of model.accum_freq 2, SigLIP, patch dropout): gradient checkpointing gives the
    plain run's losses (1e-5) and weights; bf16-mixed stays within 2% of fp32."""
    plain, plain_module = _options_run(tmp_path / "plain", "32-true", grad_checkpointing=False)
    checkpointed, module = _options_run(tmp_path / "ckpt", "32-true", grad_checkpointing=True)
    assert module.model.transformer.grad_checkpointing
    assert checkpointed == pytest.approx(plain, abs=1e-5)
    for (name, a), b in zip(plain_module.model.named_parameters(), module.model.parameters()):
        assert torch.allclose(a, b, atol=1e-5), name
    assert module.model.logit_bias.item() != -10.0  # the bias learns
    bf16, _ = _options_run(tmp_path / "bf16", "bf16-mixed", grad_checkpointing=True)
    assert bf16 == pytest.approx(plain, rel=0.02)


def test_step_diagnostics_are_logged_only_on_the_steps_the_logger_receives(tmp_path):
    """Every `self.log` is a share of the step; the logger only takes step metrics every log_every_n_steps."""
    module = ClipLitModule(build_network("tiny-vit"), optim=OptimConfig(warmup_steps=1))
    calls = []
    original = module.log
    module.log = lambda name, *args, **kwargs: calls.append(name) or original(name, *args, **kwargs)
    _trainer(tmp_path, max_steps=10, log_every_n_steps=5, enable_checkpointing=False, limit_val_batches=0).fit(
        module, SyntheticDataModule(num_samples=80, batch_size=8, image_size=32))
    assert calls.count("train/loss") == 10  # the progress bar shows it every step
    assert calls.count("train/logit_scale") == calls.count("train/samples_seen") == 2


def test_uint8_training_batches_are_normalised_on_the_device_and_float_ones_pass_through():
    module = ClipLitModule(build_network("tiny-vit"))
    pixels = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    batch = module.on_after_batch_transfer({"image": pixels, "text": torch.zeros(2, 77, dtype=torch.long)}, 0)
    assert batch["image"].dtype == torch.float32
    assert torch.equal(batch["image"], normalize_batch(pixels))
    floats = torch.randn(2, 3, 32, 32)
    assert module.on_after_batch_transfer({"image": floats}, 0)["image"] is floats
