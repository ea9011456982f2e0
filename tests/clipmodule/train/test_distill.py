"""Distillation (`model.distill`): open_clip's DistillClipLoss on the same features, the gather across 2 gloo
ranks with and without `local_loss`, accumulation, and a teacher that stays frozen and out of the checkpoint."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback
from open_clip.loss import DistillClipLoss

from clipmodule.checkpoints.io import save_checkpoint
from clipmodule.errors import ClipModuleError
from clipmodule.train.callbacks import AtomicCheckpointIO
from clipmodule.train.distill import DistillConfig, distill_clip_loss
from clipmodule.train.init import source_sha256
from clipmodule.train.module import ClipLitModule, build_network
from clipmodule.train.optim import OptimConfig
from tests.clipmodule.fixtures import SyntheticDataModule
from tests.conftest import tree_env

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py
WORKER = Path(__file__).with_name("distill_ddp_worker.py")


def _features(rows: int, dim: int, seed: int) -> torch.Tensor:
    return F.normalize(torch.randn(rows, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64),
                       dim=-1)


def test_the_loss_equals_open_clips_distill_clip_loss():
    student = [_features(6, 16, seed).requires_grad_() for seed in (0, 1)]
    teacher = [_features(6, 24, seed) for seed in (2, 3)]
    scale, teacher_scale = torch.tensor(14.0, dtype=torch.float64), torch.tensor(50.0, dtype=torch.float64)
    theirs = DistillClipLoss()(*student, scale, *teacher, teacher_scale)
    ours = distill_clip_loss(*student, scale, *teacher, teacher_scale)
    for mine, peer in zip(ours, theirs):
        assert torch.allclose(mine, peer, rtol=0, atol=1e-12)
    their_grads = torch.autograd.grad(sum(theirs), student)
    our_grads = torch.autograd.grad(sum(ours), student)
    for mine, peer in zip(our_grads, their_grads):
        assert torch.allclose(mine, peer, rtol=0, atol=1e-12)


@pytest.mark.slow
def test_two_gloo_ranks_equal_one_process_on_the_whole_batch(tmp_path):
    completed = subprocess.run([sys.executable, str(WORKER), str(tmp_path)], env=tree_env(), capture_output=True,
                               text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    sys.path.insert(0, str(WORKER.parent))
    try:
        import distill_ddp_worker as worker
    finally:
        sys.path.remove(str(WORKER.parent))
    images, tokens = worker.make_inputs()
    for variant in worker.VARIANTS:
        student, teacher = worker.make_models()
        reference = worker.variant_loss(student, teacher, images, tokens, variant, rank=0, world_size=1)
        reference.backward()
        mean_loss = (ranks[0][variant]["loss"] + ranks[1][variant]["loss"]) / 2
        assert torch.allclose(mean_loss, reference.detach(), rtol=0, atol=1e-9), variant
        for name, parameter in student.clip.named_parameters():
            for rank in ranks:  # as test_loss_ddp: 1e-6 tests the semantics, not float rounding
                assert torch.allclose(rank[variant]["grads"][name], parameter.grad, rtol=0, atol=1e-6), name
        assert student.clip.text_projection.grad.abs().max().item() > 1e-6


class Losses(Callback):
    def __init__(self):
        self.losses = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.losses.append(float(outputs["loss"]))


@pytest.fixture(scope="module")
def teacher_file(tmp_path_factory) -> Path:
    torch.manual_seed(5)
    teacher = build_network("tiny-vit", overrides={"image_size": 48})  # another size: images are resized for it
    return save_checkpoint(teacher, tmp_path_factory.mktemp("teacher") / "teacher.safetensors")


def _fit(tmp_path: Path, teacher: Path, accum_freq: int, steps: int = 1) -> tuple[ClipLitModule, list[float]]:
    torch.manual_seed(0)
    module = ClipLitModule(build_network("tiny-vit"), optim=OptimConfig(lr=1e-3, warmup_steps=1),
                           accum_freq=accum_freq, distill=DistillConfig(str(teacher), weight=0.5))
    losses = Losses()
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0, default_root_dir=tmp_path,
                        plugins=[AtomicCheckpointIO()], max_steps=steps, limit_val_batches=0, callbacks=[losses],
                        enable_checkpointing=False)
    trainer.fit(module, SyntheticDataModule(num_samples=32, batch_size=16, image_size=32, context_length=24))
    return module, losses.losses


def test_a_distilled_step_keeps_the_teacher_frozen_and_out_of_the_checkpoint(tmp_path, teacher_file):
    module, losses = _fit(tmp_path / "one", teacher_file, accum_freq=1, steps=2)
    teacher_before = {k: v.clone() for k, v in module.teacher.model.state_dict().items()}
    assert not any(k.startswith("teacher") for k in module.state_dict())
    assert module.hparams["distill"]["path"] == str(teacher_file.resolve())
    assert module.hparams["distill"]["sha256"] == source_sha256(teacher_file)
    contrastive, distill = module._loss_parts
    assert losses[-1] == pytest.approx(float(contrastive + 0.5 * distill), rel=1e-6)
    assert all(not p.requires_grad and p.grad is None for p in module.teacher.model.parameters())
    accumulated, accumulated_losses = _fit(tmp_path / "two", teacher_file, accum_freq=2)
    single, single_losses = _fit(tmp_path / "three", teacher_file, accum_freq=1)
    assert accumulated_losses == pytest.approx(single_losses, abs=1e-5)  # the teacher's features cached alike
    for (name, a), b in zip(single.model.named_parameters(), accumulated.model.parameters()):
        assert torch.allclose(a, b, atol=1e-5), name
    for name, value in module.teacher.model.state_dict().items():
        assert torch.equal(value, teacher_before[name])


def test_distillation_with_the_siglip_loss_is_refused(teacher_file):
    network = build_network("tiny-vit", init_logit_bias=-10.0)
    with pytest.raises(ClipModuleError, match="model.distill works with the clip loss"):
        ClipLitModule(network, loss="siglip", distill=DistillConfig(str(teacher_file)))


def test_a_teacher_that_cannot_read_the_students_tokens_is_refused(tmp_path):
    torch.manual_seed(0)
    short = save_checkpoint(build_network("tiny-vit", overrides={"text": {"context_length": 16}}),
                            tmp_path / "short.safetensors")
    with pytest.raises(ClipModuleError, match="the teacher must read the student's tokens"):
        ClipLitModule(build_network("tiny-vit"), distill=DistillConfig(str(short)))
