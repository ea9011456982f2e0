"""`data.zeroshot_sets` during validation predicts, image by image, what `clipmodule eval zeroshot` predicts on
the same class folder with the same model, names and templates. The model's image projection is fitted so that
its images land on different classes' text embeddings: a model that predicts one class for everything (a fresh
tiny model nearly does) would agree everywhere even with the classes of one path permuted."""

from __future__ import annotations

import os
from pathlib import Path

import lightning as L
import pytest
import torch

from clipmodule.checkpoints.io import save_checkpoint
from clipmodule.cli import main as clipmodule
from clipmodule.data.datamodule import ShardDataModule
from clipmodule.data.synthetic import CLASSNAMES, write_synthetic_shards
from clipmodule.train.module import ClipLitModule, build_network
from tests.clipmodule.train.test_validation import _folders_from_shard

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

TEMPLATES = ["a photo of a {}.", "a drawing of a {}."]


@torch.no_grad()
def _spread_model(folder: Path) -> torch.nn.Module:
    """tiny-vit whose projection maps every other image of the folder onto its class's text embedding (least
    squares): its predictions vary over the classes, right on the fitted images and otherwise on the rest."""
    from clipmodule.eval.classifier import build_zeroshot_classifier
    from clipmodule.eval.readers import open_classification
    from clipmodule.eval.tasks import model_tokenizer, probe_encoder
    from clipmodule.transforms import image_transform

    torch.manual_seed(0)
    model = build_network("tiny-vit").eval()
    dataset = open_classification(str(folder), image_transform(32, train=False), CLASSNAMES)
    images = torch.stack([dataset[index][0] for index in range(len(dataset))])
    labels = torch.tensor([label for _, label in dataset.items])
    hidden = probe_encoder(model, "pre_projection")(images).float()  # [N, width], before `visual.proj`
    targets = build_zeroshot_classifier(model, model_tokenizer(model), CLASSNAMES, TEMPLATES).t()[labels]
    fitted = torch.linalg.lstsq(hidden[::2], targets[::2] * 10).solution
    model.visual.proj.copy_(fitted.to(model.visual.proj.dtype))
    return model


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("zeroshot_per_image")
    (shard,) = write_synthetic_shards(root / "labelled", 1, 48, image_size=32, first_sample=5000)  # all 12 classes
    _folders_from_shard(shard, root / "folder", lambda label: f"n{label:08d}")
    (root / "names.txt").write_text("\n".join(CLASSNAMES) + "\n")
    (root / "templates.txt").write_text("\n".join(TEMPLATES) + "\n")
    save_checkpoint(_spread_model(root / "folder"), root / "spread.safetensors")
    return {"root": root, "shard": shard}


def _fit_predictions(setup: dict[str, Path], monkeypatch, tmp_path) -> dict[str, tuple[int, int]]:
    """{image path under the folder: (predicted class, label)} from `data.zeroshot_sets` in a validation pass."""
    from clipmodule.api import load
    from clipmodule.eval.tasks import zeroshot as zeroshot_kind  # fit's tracker of the zero-shot kind
    from clipmodule.train import module as train_module

    root, keys, labels, predictions = setup["root"], [], [], []
    logits = zeroshot_kind.zeroshot_logits
    monkeypatch.setattr(zeroshot_kind, "zeroshot_logits",
                        lambda *args: predictions.extend(logits(*args).argmax(1).tolist()) or logits(*args))
    step = train_module.ClipLitModule.validation_step

    def keep_keys(self, batch, *args, **kwargs):
        keys.extend(batch["key"])
        labels.extend(batch["label"].tolist())
        return step(self, batch, *args, **kwargs)

    monkeypatch.setattr(train_module.ClipLitModule, "validation_step", keep_keys)
    sets = {"folder": {"data": str(root / "folder"), "classnames": str(root / "names.txt"), "templates": TEMPLATES}}
    datamodule = ShardDataModule(train_shards=str(setup["shard"]), zeroshot_sets=sets, batch_size=16,
                                 num_workers=0, image_size=32)
    network, _ = load(root / "spread.safetensors")
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path)
    trainer.validate(ClipLitModule(network), datamodule)
    assert len(keys) == len(predictions) == 48
    return dict(zip(keys, zip(predictions, labels)))


def _eval_predictions(setup: dict[str, Path], monkeypatch, tmp_path) -> dict[str, tuple[int, int]]:
    """{image path under the folder: (predicted class, label)} from `clipmodule eval zeroshot`."""
    from clipmodule.eval.readers import open_classification
    from clipmodule.eval.tasks import zeroshot as tasks  # the module whose logits eval zeroshot takes

    root, predictions = setup["root"], []
    logits = tasks.zeroshot_logits
    monkeypatch.setattr(tasks, "zeroshot_logits",
                        lambda *args: predictions.extend(logits(*args).argmax(1).tolist()) or logits(*args))
    code = clipmodule(["eval", "zeroshot", "--model", str(root / "spread.safetensors"), "--dataset",
                       str(root / "folder"), "--classnames", str(root / "names.txt"), "--templates",
                       str(root / "templates.txt"), "--output", str(tmp_path / "zs.json"), "--tracking.uri", "none",
                       "--loader.num_workers", "0"])
    assert code == 0
    items = open_classification(str(root / "folder"), None, CLASSNAMES).items  # the order eval reads them in
    assert len(items) == len(predictions) == 48
    return {os.path.relpath(path, root / "folder"): (prediction, label)
            for (path, label), prediction in zip(items, predictions)}


def test_zeroshot_sets_predict_each_image_as_eval_zeroshot_does(setup, monkeypatch, tmp_path):
    during_fit = _fit_predictions(setup, monkeypatch, tmp_path)
    monkeypatch.undo()
    evaluated = _eval_predictions(setup, monkeypatch, tmp_path)
    predicted = [prediction for prediction, _ in evaluated.values()]
    assert len(set(predicted)) >= 6  # the model's predictions spread over the classes
    assert 0 < sum(prediction == label for prediction, label in evaluated.values()) < len(predicted)
    assert during_fit == evaluated
