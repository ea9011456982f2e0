"""Each network of a run sees pixels normalised as it was trained (`clipmodule.train.pixels`): a student started
from a release with other mean/std than OpenAI's (SigLIP's 0.5/0.5), and a distillation teacher with its own."""

from __future__ import annotations

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image

import clipmodule
from clipmodule.checkpoints.io import save_checkpoint
from clipmodule.checkpoints.preprocess import Preprocess
from clipmodule.errors import ClipModuleError
from clipmodule.train.callbacks import AtomicCheckpointIO
from clipmodule.train.distill import DistillConfig
from clipmodule.train.module import ClipLitModule, build_network
from clipmodule.train.optim import OptimConfig
from clipmodule.train.pixels import PixelNorm
from clipmodule.transforms import image_transform, normalize_batch
from tests.clipmodule.fixtures import SyntheticDataModule

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py
HALF = (0.5, 0.5, 0.5)
SIGLIP_LIKE = PixelNorm(HALF, HALF)


def _release(tmp_path, name: str, seed: int):
    """A tiny release whose preprocess says mean 0.5, std 0.5 (as SigLIP's do)."""
    torch.manual_seed(seed)
    network = build_network("tiny-vit", overrides={"text": {"context_length": 24}})
    network.preprocess_cfg = Preprocess(32, mean=HALF, std=HALF)
    return save_checkpoint(network, tmp_path / f"{name}.safetensors")


def _pixels(seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (4, 3, 32, 32), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def test_a_student_from_a_release_trains_and_validates_on_its_releases_normalisation(tmp_path):
    module = ClipLitModule(init_from=str(_release(tmp_path, "release", 0)))
    assert module.pixels == SIGLIP_LIKE and module.hparams["preprocess"]["mean"] == list(HALF)
    pixels = _pixels()
    trained = module.on_after_batch_transfer({"image": pixels}, 0)["image"]
    torch.testing.assert_close(trained, pixels.float() / 255 * 2 - 1, atol=1e-6, rtol=0)
    # an evaluation batch (the data's OpenAI-normalised eval transform) equals the release's own transform's output
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 48, 3), dtype=np.uint8))
    evaluated = module.on_after_batch_transfer({"image": image_transform(32)(image)[None]}, 0)["image"]
    torch.testing.assert_close(evaluated[0], Preprocess(32, mean=HALF, std=HALF).transform()(image), atol=1e-5,
                               rtol=0)


def test_a_network_from_scratch_keeps_openais_normalisation():
    module = ClipLitModule(build_network("tiny-vit"))
    pixels = _pixels()
    assert module.pixels.is_openai and module.hparams["preprocess"] is None
    assert torch.equal(module.on_after_batch_transfer({"image": pixels}, 0)["image"], normalize_batch(pixels))
    evaluated = torch.randn(2, 3, 32, 32)
    assert module.on_after_batch_transfer({"image": evaluated}, 0)["image"] is evaluated


def test_the_fit_checkpoint_keeps_the_releases_preprocessing(tmp_path):
    """clipmodule.load (eval, convert, export) reads it with the release's mean/std, and a module built without
    init_from that restores it (validate --ckpt_path) takes them too."""
    module = ClipLitModule(init_from=str(_release(tmp_path, "release", 0)), optim=OptimConfig(lr=1e-3,
                                                                                              warmup_steps=1))
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, max_steps=1,
                        enable_model_summary=False, limit_val_batches=0, default_root_dir=tmp_path,
                        enable_checkpointing=False, plugins=[AtomicCheckpointIO()])
    trainer.fit(module, SyntheticDataModule(num_samples=8, batch_size=4, context_length=24))
    trainer.save_checkpoint(tmp_path / "fit.ckpt")
    model, preprocess = clipmodule.load(str(tmp_path / "fit.ckpt"))
    assert (model.preprocess_cfg.mean, model.preprocess_cfg.std) == (HALF, HALF)
    plain = ClipLitModule(build_network("tiny-vit", overrides={"text": {"context_length": 24}}))
    plain.on_load_checkpoint(torch.load(tmp_path / "fit.ckpt", weights_only=True))
    assert plain.pixels == SIGLIP_LIKE


@pytest.mark.parametrize("student_release", [False, True])
def test_a_teacher_sees_the_batch_normalised_with_its_own_values(tmp_path, student_release):
    """A 0.5/0.5 teacher beside an OpenAI-normalised student, and an OpenAI-normalised teacher (a network saved
    without preprocess) beside a 0.5/0.5 student: the teacher's features are those of its own normalisation."""
    if student_release:
        torch.manual_seed(1)
        teacher = save_checkpoint(build_network("tiny-vit", overrides={"text": {"context_length": 24}}),
                                  tmp_path / "teacher.safetensors")
        module = ClipLitModule(init_from=str(_release(tmp_path, "student", 2)), distill=DistillConfig(str(teacher)))
    else:
        teacher = _release(tmp_path, "teacher", 1)
        module = ClipLitModule(build_network("tiny-vit", overrides={"text": {"context_length": 24}}),
                               distill=DistillConfig(str(teacher)))
    pixels, text = _pixels(3), torch.randint(1, 400, (4, 24))
    batch = module.on_after_batch_transfer({"image": pixels, "text": text}, 0)
    images, _ = module.teacher.encode_batch(batch, 2, module.pixels)
    own = module.teacher.pixels
    assert own == (PixelNorm() if student_release else SIGLIP_LIKE) and own != module.pixels
    with torch.no_grad():
        expected = module.teacher.model.encode_image(normalize_batch(pixels, own.mean, own.std), normalize=True)
    torch.testing.assert_close(images, expected, atol=1e-5, rtol=0)


def test_a_fit_checkpoint_without_a_recorded_preprocess_was_trained_with_openais_values(tmp_path, caplog):
    """A fit checkpoint from scratch (or from before runs recorded it) has no hyper_parameters.preprocess: its
    weights saw OpenAI's values, whatever the restoring module was built from; one log line says so."""
    module = ClipLitModule(init_from=str(_release(tmp_path, "release", 0)))
    assert module.pixels == SIGLIP_LIKE
    with caplog.at_level("INFO", logger="clipmodule.train.pixels"):
        module.on_load_checkpoint({"state_dict": module.state_dict(), "hyper_parameters": {"preprocess": None}})
    assert module.pixels.is_openai
    assert len([r for r in caplog.records if "trained with pixel mean" in r.getMessage()]) == 1
    # what the run records and evaluates with follows: its next checkpoints, exports and in-fit trackers
    assert module.hparams["preprocess"] is None and module.model.preprocess_cfg is None
    caplog.clear()
    module.on_load_checkpoint({"state_dict": module.state_dict()})  # no fit checkpoint: the module's own stay
    assert module.pixels.is_openai and not caplog.records


@pytest.mark.parametrize("record", [{"mean": [0.5], "std": [0.5]}, {"mean": [0.5] * 4, "std": [0.5] * 4},
                                    {"mean": "abc", "std": [0.5] * 3}, {"mean": ["a", "b", "c"], "std": [0.5] * 3},
                                    "0.5"])
def test_a_malformed_recorded_preprocess_is_one_error_naming_the_checkpoint(record):
    module = ClipLitModule(build_network("tiny-vit"))
    with pytest.raises(ClipModuleError, match=r"given: hyper_parameters\.preprocess"):
        module.on_load_checkpoint({"state_dict": module.state_dict(), "hyper_parameters": {"preprocess": record}})


def test_float_batches_are_openais_unless_they_carry_their_norm(tmp_path):
    """The batch contract (`on_after_batch_transfer`): float images are OpenAI-normalised, or as `image_norm` says."""
    module = ClipLitModule(init_from=str(_release(tmp_path, "release", 0)))
    pixels = _pixels().float() / 255
    openai, half = normalize_batch(_pixels()), pixels * 2 - 1
    torch.testing.assert_close(module.on_after_batch_transfer({"image": openai}, 0)["image"], half, atol=1e-5, rtol=0)
    tagged = {"image": half, "image_norm": (HALF, HALF)}
    assert module.on_after_batch_transfer(tagged, 0)["image"] is half  # already the network's: untouched
    scratch = ClipLitModule(build_network("tiny-vit"))
    torch.testing.assert_close(scratch.on_after_batch_transfer(tagged, 0)["image"], openai, atol=1e-5, rtol=0)
    with pytest.raises(ClipModuleError, match="batch image_norm .*3 values each"):
        scratch.on_after_batch_transfer({"image": half, "image_norm": ([0.5], [0.5])}, 0)
