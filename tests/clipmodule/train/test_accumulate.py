"""model.accum_freq: k micro-batches whose loss still contrasts the whole batch give the update of one step on
the whole batch, keep the random state of patch dropout, resume exactly, and refuse what they cannot honour."""

from __future__ import annotations

import copy
import math
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from clipmodule.data.datamodule import ShardDataModule
from clipmodule.data.synthetic import write_synthetic_shards
from clipmodule.errors import ClipModuleError
from clipmodule.train.accumulate import accumulate_gradients, split_batch
from clipmodule.train.callbacks import AtomicCheckpointIO
from clipmodule.train.module import ClipLitModule, build_network
from clipmodule.train.optim import OptimConfig
from tests.clipmodule.fixtures import SyntheticDataModule, SyntheticPairs
from tests.conftest import QUIET_WORKER, tree_env

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py
REPO = Path(__file__).resolve().parents[3]

# Adam divides each gradient by its running magnitude: a gradient that is zero in exact arithmetic (the attention
# key biases: softmax ignores a constant shift) is fp32 rounding noise, which eps=1e-6 would turn into steps of
# the learning rate's size whatever the summation order. eps=1e-3 keeps those steps at the noise's size.
OPTIM = OptimConfig(lr=1e-3, eps=1e-3, warmup_steps=1, weight_decay=0.1)
VARIANTS = {"clip": dict(loss="clip"), "clip_local": dict(loss="clip", local_loss=True),
            "siglip": dict(loss="siglip")}


def _trainer(tmp_path: Path, **options) -> L.Trainer:
    defaults = dict(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
                    num_sanity_val_steps=0, limit_val_batches=0, enable_checkpointing=False, default_root_dir=tmp_path,
                    plugins=[AtomicCheckpointIO()])
    return L.Trainer(**{**defaults, **options})


def _network(loss: str, patch_dropout: float = 0.0):
    torch.manual_seed(0)
    siglip = loss == "siglip"
    return build_network("tiny-vit", patch_dropout=patch_dropout, init_logit_scale=math.log(10) if siglip else None,
                         init_logit_bias=-10.0 if siglip else None)


class Losses(Callback):
    def __init__(self):
        self.losses = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.losses.append(float(outputs["loss"] if isinstance(outputs, dict) else outputs))


def _fit(tmp_path: Path, accum_freq: int, variant: str, steps: int = 3, clip: float | None = None):
    options = VARIANTS[variant]
    module = ClipLitModule(_network(options["loss"]), optim=OPTIM, accum_freq=accum_freq,
                           accum_grad_clip=clip if accum_freq > 1 else None, **options)
    recorder = Losses()
    trainer = _trainer(tmp_path, max_steps=steps, callbacks=[recorder],
                       gradient_clip_val=clip if accum_freq == 1 else None)
    trainer.fit(module, SyntheticDataModule(num_samples=64, batch_size=16, image_size=32))
    assert trainer.global_step == steps
    return module, recorder.losses


@pytest.mark.parametrize("variant", ["clip", "clip_local", "siglip", "clip+clipping"])
def test_k_micro_batches_give_the_weights_of_steps_on_the_whole_batch(tmp_path, variant):
    """3 steps of batch 16: in one piece, and as 4 micro-batches of 4 (fp32 CPU). Contrasting each micro-batch
    with its own 3 negatives only, or taking the logit scale's gradient 4 times, would be far outside 1e-6."""
    name, _, clipping = variant.partition("+")
    clip = 0.05 if clipping else None  # well under the gradient norm: every step is clipped
    whole, whole_losses = _fit(tmp_path / "whole", 1, name, clip=clip)
    micro, micro_losses = _fit(tmp_path / "micro", 4, name, clip=clip)
    assert micro_losses == pytest.approx(whole_losses, abs=1e-6)  # the logged loss is the whole batch's
    start = _network(VARIANTS[name]["loss"])
    for (key, a), b in zip(whole.model.named_parameters(), micro.model.parameters()):
        assert (a - b).abs().max().item() <= 1e-6, f"{key} differs by {(a - b).abs().max().item()}"
    moved = max((a - b).abs().max().item() for a, b in zip(whole.model.parameters(), start.parameters()))
    assert moved > 1e-3  # the steps did something


def test_patch_dropout_draws_the_same_patches_when_a_micro_batch_is_encoded_again():
    """With patch dropout 0.5, the accumulated gradient equals that of one graph over the micro-batches encoded
    in order, and the generator ends where that graph leaves it; a fresh draw in the second pass would not."""
    module = ClipLitModule(_network("clip", patch_dropout=0.5))
    pairs = SyntheticPairs(16, 32, 77)
    micro_batches = split_batch({"image": pairs.images, "text": pairs.texts}, 4)

    torch.manual_seed(11)
    features = [module.encode_pair(micro) for micro in micro_batches]
    module.loss_of_features(torch.cat([f[0] for f in features]), torch.cat([f[1] for f in features])).backward()
    expected = {name: p.grad.clone() for name, p in module.model.named_parameters()}
    after = torch.rand(4)
    module.model.zero_grad()

    torch.manual_seed(11)
    accumulate_gradients(module.model, micro_batches, module.encode_pair, module.loss_of_features,
                         lambda loss, index: loss.backward(), torch.device("cpu"))
    assert torch.equal(torch.rand(4), after)
    for name, parameter in module.model.named_parameters():
        diff = (parameter.grad - expected[name]).abs().max().item()
        assert diff <= 1e-6, f"{name} differs by {diff}"
    torch.manual_seed(12)  # the check can fail: other patches give other gradients
    module.model.zero_grad()
    accumulate_gradients(module.model, micro_batches, module.encode_pair, module.loss_of_features,
                         lambda loss, index: loss.backward(), torch.device("cpu"))
    assert (module.model.visual.conv1.weight.grad - expected["visual.conv1.weight"]).abs().max() > 1e-4


def test_batchnorm_statistics_count_each_micro_batch_once():
    """A ResNet tower's BatchNorm running statistics after an accumulated step are those of its passes with
    gradients only: each micro-batch seen once, in order. The caching pass runs the same forward in train mode
    and, unrestored, would count every micro-batch twice (8 updates, not 4). (open_clip's --accum-freq does not
    restore them; counting once is what the same step without a caching pass would leave.)"""
    torch.manual_seed(0)
    module = ClipLitModule(build_network("tiny-rn")).train()
    pairs = SyntheticPairs(16, 64, 77)
    micro_batches = split_batch({"image": pairs.images, "text": pairs.texts}, 4)
    reference = copy.deepcopy(module)
    with torch.no_grad():
        for micro in micro_batches:
            reference.encode_pair(micro)
    statistics = {name: buffer for name, buffer in reference.model.named_buffers()
                  if name.rsplit(".", 1)[-1] in ("running_mean", "running_var", "num_batches_tracked")}
    assert len(statistics) > 10 and statistics["visual.bn1.num_batches_tracked"] == 4

    start = copy.deepcopy(dict(module.model.named_buffers()))
    accumulate_gradients(module.model, micro_batches, module.encode_pair, module.loss_of_features,
                         lambda loss, index: loss.backward(), torch.device("cpu"))
    buffers = dict(module.model.named_buffers())
    for name, expected in statistics.items():
        assert torch.allclose(buffers[name], expected, rtol=0, atol=1e-6), name
    assert not torch.allclose(buffers["visual.bn1.running_mean"], start["visual.bn1.running_mean"])  # they moved


class StopAfter(Callback):
    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, *args):
        if trainer.global_step >= self.step:
            trainer.should_stop = True


def _resume_run(tmp_path: Path, shards: Path, stop: int = 0, ckpt_path: Path | None = None):
    torch.manual_seed(7)
    module = ClipLitModule(build_network("tiny-vit", patch_dropout=0.5), optim=OptimConfig(lr=1e-3, warmup_steps=2),
                           accum_freq=2)
    data = ShardDataModule(train_shards=str(shards), batch_size=8, num_workers=1, image_size=32, shuffle_buffer=16,
                           seed=3)
    callbacks: list[Callback] = [ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=3, save_top_k=-1,
                                                 filename="step{step}", auto_insert_metric_name=False)]
    callbacks += [StopAfter(stop)] if stop else []
    trainer = _trainer(tmp_path, max_steps=10, callbacks=callbacks, enable_checkpointing=True)
    trainer.fit(module, data, ckpt_path=ckpt_path)
    return module, trainer


@pytest.mark.slow  # 25 s on the shared 2 cores
def test_an_accumulated_fit_resumes_mid_epoch_to_the_unbroken_weights_and_schedule(tmp_path):
    shards = tmp_path / "shards"
    write_synthetic_shards(shards, 2, 24, image_size=32)  # 48 samples: 6 steps an epoch, the runs cross one
    straight, _ = _resume_run(tmp_path / "a", shards)
    _resume_run(tmp_path / "b", shards, stop=3)
    resumed, trainer = _resume_run(tmp_path / "b", shards, ckpt_path=tmp_path / "b" / "ckpt" / "step3.ckpt")
    assert trainer.global_step == 10
    assert trainer.lr_scheduler_configs[0].scheduler.last_epoch == 10  # the schedule stepped once per step
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), f"{name} differs by {(a - b).abs().max()}"


@pytest.mark.parametrize(("options", "trainer_options", "message"), [
    ({}, {"accumulate_grad_batches": 2}, "trainer.accumulate_grad_batches=2 would contrast each micro-batch with "
                                         "its own negatives only: set model.accum_freq=2"),
    ({"accum_freq": 2}, {"gradient_clip_val": 1.0}, "set model.accum_grad_clip instead"),
    ({"accum_freq": 3}, {}, "data.batch_size=16 does not split into model.accum_freq=3 equal micro-batches"),
])
def test_options_that_would_change_the_negatives_or_cannot_apply_are_refused_in_one_line(tmp_path, options,
                                                                                       trainer_options, message):
    module = ClipLitModule(_network("clip"), **options)
    with pytest.raises(ClipModuleError, match=message) as error:
        _trainer(tmp_path, max_steps=1, **trainer_options).fit(module, SyntheticDataModule(16, 16, image_size=32))
    assert "\n" not in str(error.value)
    with pytest.raises(ClipModuleError, match="model.accum_freq must be 1 or more"):
        ClipLitModule(_network("clip"), accum_freq=0)


@pytest.mark.slow  # 6 two-rank fits: about a minute on the shared 2 cores
def test_on_two_ranks_k_micro_batches_give_the_weights_of_steps_on_the_whole_batch(tmp_path):
    """DDP over 2 gloo ranks: the micro-batches' gradients are all-reduced once, after the last one."""
    env = tree_env(**QUIET_WORKER)
    done = subprocess.run([sys.executable, str(Path(__file__).with_name("accumulate_ddp_worker.py")), str(tmp_path)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    weights = torch.load(tmp_path / "weights.pt", weights_only=True)
    start = _network("clip").state_dict()
    for variant in VARIANTS:
        whole, micro = weights[f"{variant}/1"], weights[f"{variant}/4"]
        for name, value in whole.items():
            assert (value - micro[name]).abs().max().item() <= 1e-6, f"{variant}: {name} differs"
    assert (weights["clip/1"]["visual.conv1.weight"] - start["visual.conv1.weight"]).abs().max() > 1e-3


class PoisonAt(Callback):
    def __init__(self, step: int):
        self.step = step

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if trainer.global_step == self.step:
            with torch.no_grad():
                module.model.visual.conv1.weight.fill_(float("nan"))


def test_a_non_finite_accumulated_loss_stops_before_the_step(tmp_path):
    module = ClipLitModule(_network("clip"), optim=OPTIM, accum_freq=2)
    trainer = _trainer(tmp_path, max_steps=5, callbacks=[PoisonAt(2)])
    with pytest.raises(ClipModuleError, match="non-finite loss .* at step 2"):
        trainer.fit(module, SyntheticDataModule(num_samples=64, batch_size=16, image_size=32))
    assert trainer.global_step == 2
    assert torch.isfinite(module.model.text_projection).all()  # the poisoned step changed nothing else
