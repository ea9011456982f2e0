"""`model.init_from`: a run starts from the weights of an OpenAI TorchScript archive, an open_clip hub folder or a
Hugging Face folder (made by the peers themselves), refuses a configured network of another architecture, lets
`--ckpt_path` (resume) win, and records what it started from in MLflow."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import lightning as L
import open_clip
import pytest
import safetensors.torch
import torch
from lightning.pytorch.callbacks import Callback
from transformers import CLIPConfig as HFCLIPConfig
from transformers import CLIPModel

import clipmodule
from clipmodule.checkpoints.open_clip import config_to_open_clip
from clipmodule.data.synthetic import CLASSNAMES, write_synthetic_shards
from clipmodule.errors import ClipModuleError
from clipmodule.train.callbacks import AtomicCheckpointIO
from clipmodule.train.lock import LockConfig
from clipmodule.train.module import ClipLitModule, build_network
from clipmodule.train.optim import OptimConfig
from tests.clipmodule.fixtures import SyntheticDataModule
from tests.clipmodule.train.test_cli import TINY
from tests.clipmodule.train.test_cli import clipmodule as run_clipmodule

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _same_weights(model: torch.nn.Module, state_dict: dict[str, torch.Tensor]) -> bool:
    own = model.state_dict()
    return own.keys() == state_dict.keys() and all(torch.equal(own[key], value.reshape(own[key].shape))
                                                   for key, value in state_dict.items())


def test_openai_torchscript_archive_is_step_zero_and_a_different_configured_network_is_refused(tmp_path):
    torch.manual_seed(0)
    reference = clipmodule.create_model("tiny-vit").eval()
    traced = torch.jit.trace(reference, (torch.randn(1, 3, 32, 32), clipmodule.tokenize(["a cat"])), check_trace=False)
    torch.jit.save(traced, tmp_path / "ViT-tiny.pt")
    module = ClipLitModule(init_from=str(tmp_path / "ViT-tiny.pt"))
    assert _same_weights(module.model, reference.state_dict()) and module.model.training
    assert module.init_source["sha256"] == hashlib.sha256((tmp_path / "ViT-tiny.pt").read_bytes()).hexdigest()
    # the configured network of the same architecture receives the weights (and keeps its patch dropout)
    configured = ClipLitModule(build_network("tiny-vit", patch_dropout=0.25), init_from=str(tmp_path / "ViT-tiny.pt"))
    assert _same_weights(configured.model, reference.state_dict())
    assert configured.model.config.vision.patch_dropout == 0.25
    # GELU vs QuickGELU: the shapes fit, the model would differ without an error: refused in one line
    with pytest.raises(ClipModuleError, match=r"architecture differs from model.model's \(quick_gelu True vs False"):
        ClipLitModule(build_network("tiny-vit", quick_gelu=False), init_from=str(tmp_path / "ViT-tiny.pt"))


def test_open_clip_hub_folder_gives_open_clips_outputs(tmp_path):
    config = config_to_open_clip(clipmodule.create_model("tiny-vit").config)
    torch.manual_seed(1)
    theirs = open_clip.CLIP(config["embed_dim"], config["vision_cfg"], config["text_cfg"],
                            quick_gelu=config.get("quick_gelu", False)).eval()
    with torch.no_grad():  # open_clip zero-inits some biases; random everywhere makes every weight matter
        for parameter in theirs.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.02)
    folder = tmp_path / "hub"
    folder.mkdir()
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": config, "preprocess_cfg": {}}))
    safetensors.torch.save_file(theirs.state_dict(), str(folder / "open_clip_model.safetensors"))
    module = ClipLitModule(init_from=str(folder))
    assert _same_weights(module.model, theirs.state_dict())
    images, text = torch.randn(2, 3, 32, 32), clipmodule.tokenize(["a red circle", "a blue square"])
    with torch.no_grad():
        ours = module.model.eval()
        assert (ours.encode_image(images) - theirs.encode_image(images)).abs().max() <= 1e-5
        assert (ours.encode_text(text) - theirs.encode_text(text)).abs().max() <= 1e-5
    assert len(module.init_source["sha256"]) == 64


def test_hugging_face_folder_gives_transformers_outputs(tmp_path):
    torch.manual_seed(2)
    config = HFCLIPConfig(text_config=dict(hidden_size=64, intermediate_size=128, num_attention_heads=2,
                                           num_hidden_layers=1, max_position_embeddings=77),
                          vision_config=dict(hidden_size=64, intermediate_size=128, num_attention_heads=2,
                                             num_hidden_layers=1, image_size=32, patch_size=8),
                          projection_dim=32)
    theirs = CLIPModel(config).eval()
    theirs.save_pretrained(tmp_path / "hf")
    module = ClipLitModule(init_from=str(tmp_path / "hf"))
    images, text = torch.randn(2, 3, 32, 32), clipmodule.tokenize(["a red circle", "a blue square"])
    with torch.no_grad():
        ours = module.model.eval()
        expected_image = theirs.get_image_features(pixel_values=images)
        expected_text = theirs.get_text_features(input_ids=text)
        expected_image = getattr(expected_image, "pooler_output", expected_image)
        expected_text = getattr(expected_text, "pooler_output", expected_text)
        assert (ours.encode_image(images) - expected_image).abs().max() <= 1e-5
        assert (ours.encode_text(text) - expected_text).abs().max() <= 1e-5


class FirstWeights(Callback):
    def on_train_start(self, trainer, module):
        self.weights = {key: value.clone() for key, value in module.model.state_dict().items()}


def _fit(tmp_path: Path, module: ClipLitModule, steps: int, ckpt_path: str | None = None,
         logger: object = False) -> FirstWeights:
    first = FirstWeights()
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=logger, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
                        default_root_dir=tmp_path, max_steps=steps, callbacks=[first], plugins=[AtomicCheckpointIO()])
    trainer.fit(module, SyntheticDataModule(num_samples=32, batch_size=8, image_size=32), ckpt_path=ckpt_path)
    return first


def test_fit_starts_from_the_file_records_it_in_mlflow_and_resume_wins_over_it(tmp_path):
    from lightning.pytorch.loggers import MLFlowLogger
    from mlflow.tracking import MlflowClient

    torch.manual_seed(0)
    start = clipmodule.create_model("tiny-vit")
    weights = clipmodule.save_checkpoint(start, tmp_path / "start.safetensors")
    options = dict(init_from=str(weights), zeroshot_classnames=CLASSNAMES, optim=OptimConfig(lr=1e-3, warmup_steps=1),
                   lock=LockConfig(lock_image=True, image_unlocked_groups=1))
    store = f"sqlite:///{tmp_path / 'mlruns.db'}"
    logger = MLFlowLogger(experiment_name="init", tracking_uri=store)
    first = _fit(tmp_path / "a", ClipLitModule(**options), steps=2, logger=logger)
    assert _same_weights(start, first.weights)  # step 0 is the file
    params = MlflowClient(store).get_run(logger.run_id).data.params
    assert params["init_from/path"] == str(weights.resolve())
    assert params["init_from/sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert params["lock/lock_image"] == "True" and params["lock/image_unlocked_groups"] == "1"
    (checkpoint,) = (tmp_path / "a").rglob("*.ckpt")
    saved = torch.load(checkpoint, weights_only=True)["state_dict"]
    resumed = _fit(tmp_path / "b", ClipLitModule(**options), steps=3, ckpt_path=str(checkpoint))
    assert _same_weights(start, {k.removeprefix("model."): v for k, v in saved.items()}) is False
    assert all(torch.equal(resumed.weights[key.removeprefix("model.")].reshape(value.shape), value)
               for key, value in saved.items())


@pytest.mark.slow  # a whole `clipmodule fit` process (~30 s here); the same record in-process is tested above
def test_fit_cli_starts_from_weights_with_a_locked_image_tower_and_records_it_in_mlflow(tmp_path):
    torch.manual_seed(0)
    start = clipmodule.create_model("tiny-vit")
    weights = clipmodule.save_checkpoint(start, tmp_path / "start.safetensors")
    write_synthetic_shards(tmp_path / "train", 2, 32, image_size=32)
    done = run_clipmodule(["fit", *TINY, "--model.model", "null", "--model.init_from", str(weights),
                           "--model.lock.lock_image", "true", "--data.train_shards", str(tmp_path / "train"),
                           "--data.num_workers", "0", "--data.batch_size", "16", "--trainer.max_steps", "3",
                           "--trainer.val_check_interval", "null", "--checkpoint.every_n_train_steps", "3"],
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("tiny_cpu").experiment_id])
    assert run.data.params["init_from/path"] == str(weights.resolve())
    assert run.data.params["init_from/sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert run.data.params["lock/lock_image"] == "True"
    trained = torch.load(tmp_path / run.data.tags["run_folder"] / "checkpoints" / "last.ckpt", weights_only=True)
    trained = {key.removeprefix("model."): value for key, value in trained["state_dict"].items()}
    own = start.state_dict()
    assert all(torch.equal(trained[key], own[key]) for key in own if key.startswith("visual."))
    assert not torch.equal(trained["token_embedding.weight"], own["token_embedding.weight"])
