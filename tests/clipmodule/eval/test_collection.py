"""`eval suite` with several models (`models:`, a glob of checkpoints): one table, one plot, the grouped averages of
each model, resumed per (model, task); bad entries are one line."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from PIL import Image

from clipmodule.checkpoints.io import save_checkpoint
from clipmodule.cli import main as clipmodule
from clipmodule.errors import ClipModuleError
from clipmodule.eval.collection import expand_models, model_labels
from clipmodule.models import create_model

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def test_a_collection_of_checkpoints_gives_one_table_one_plot_and_resumes(tmp_path, capsys):
    for seed in (0, 1):
        torch.manual_seed(seed)
        save_checkpoint(create_model("tiny-vit"), tmp_path / "ckpts" / f"epoch_{seed}.safetensors")
    for name, colour in (("cat", "red"), ("dog", "blue")):
        for index in range(3):
            (tmp_path / "test" / name).mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (24, 24), colour).save(tmp_path / "test" / name / f"{index}.png")
    suite = {"name": "many", "output": str(tmp_path / "out"), "models": [str(tmp_path / "ckpts" / "*.safetensors")],
             "tasks": [{"task": "zeroshot", "dataset": str(tmp_path / "test"), "templates": "simple", "name": "pets"}]}
    (tmp_path / "suite.yaml").write_text(yaml.safe_dump(suite))
    argv = ["eval", "suite", "-c", str(tmp_path / "suite.yaml"), "--tracking.uri", "none"]
    assert clipmodule(argv) == 0, capsys.readouterr().err
    table = (tmp_path / "out" / "many.md").read_text()
    assert "| task | metric | epoch_0.safetensors | epoch_1.safetensors |" in table and "| pets | top1 |" in table
    assert "| avg Average | average |" in table
    assert (tmp_path / "out" / "many.png").read_bytes()[:4] == b"\x89PNG"
    record = json.loads((tmp_path / "out" / "many.json").read_text())
    assert [entry["model"].rsplit("/", 1)[-1] for entry in record["models"]] == ["epoch_0.safetensors",
                                                                                "epoch_1.safetensors"]
    assert record["models"][0]["rows"][0]["detail"]["per_class_count"] == [3, 3]
    assert len(list((tmp_path / "out" / "many.tasks").glob("*.json"))) == 2  # one record per (model, task)
    assert clipmodule(argv) == 0
    again = json.loads((tmp_path / "out" / "many.json").read_text())
    assert [entry["reused"] for entry in again["models"]] == [["pets"], ["pets"]]
    capsys.readouterr()
    assert clipmodule([*argv, "--model", "other.pt"]) == 2
    assert capsys.readouterr().err.strip().endswith("suite 'many': give `model` or `models`, not both")


def test_model_entries_expand_and_bad_ones_are_one_line(tmp_path):
    (tmp_path / "a.pt").touch(), (tmp_path / "b.pt").touch()
    assert expand_models([str(tmp_path / "*.pt"), "ViT-B-32"]) == [str(tmp_path / "a.pt"), str(tmp_path / "b.pt"),
                                                                   "ViT-B-32"]
    with pytest.raises(ClipModuleError, match=r"^models: '.*\*.ckpt' matches no file$"):
        expand_models([str(tmp_path / "*.ckpt")])
    with pytest.raises(ClipModuleError, match="is listed twice"):
        expand_models([str(tmp_path / "a.pt"), str(tmp_path / "*.pt")])
    assert model_labels(["x/last.pt", "y/last.pt", "z/first.pt"]) == ["x/last.pt", "y/last.pt", "first.pt"]


def test_a_failure_on_a_later_model_keeps_the_earlier_models_results(tmp_path, capsys):
    torch.manual_seed(0)
    save_checkpoint(create_model("tiny-vit"), tmp_path / "ckpts" / "epoch_0.safetensors")
    (tmp_path / "ckpts" / "epoch_1.safetensors").write_bytes(b"not a checkpoint")  # fails to load, after epoch_0
    for name, colour in (("cat", "red"), ("dog", "blue")):
        (tmp_path / "test" / name).mkdir(parents=True)
        Image.new("RGB", (24, 24), colour).save(tmp_path / "test" / name / "0.png")
    suite = {"name": "many", "output": str(tmp_path / "out"), "models": [str(tmp_path / "ckpts" / "*.safetensors")],
             "tasks": [{"task": "zeroshot", "dataset": str(tmp_path / "test"), "templates": "simple", "name": "pets"}]}
    (tmp_path / "suite.yaml").write_text(yaml.safe_dump(suite))
    assert clipmodule(["eval", "suite", "-c", str(tmp_path / "suite.yaml"), "--tracking.uri", "none"]) == 2
    assert "epoch_1.safetensors" in capsys.readouterr().err
    record = json.loads((tmp_path / "out" / "many.json").read_text())
    assert [entry["model"].rsplit("/", 1)[-1] for entry in record["models"]] == ["epoch_0.safetensors"]
    assert [path.rsplit("/", 1)[-1] for path in record["pending"]] == ["epoch_1.safetensors"]
    assert "many: 1 of 2 models" in (tmp_path / "out" / "many.md").read_text()
