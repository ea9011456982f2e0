"""A stored suite result is reused only when every input it depends on is the same: template and class-name files
by content (not by path), the model's weights (a model name by the file it loads), its config and tokenizer files;
a collection writes its results before MLflow, so a tracking failure loses nothing."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

from clipmodule.checkpoints.io import save_checkpoint
from clipmodule.cli import main as clipmodule
from clipmodule.errors import ClipModuleError
from clipmodule.eval.options import LinearProbeOptions, SuiteConfig, TaskSpec
from clipmodule.eval.results import model_fingerprint, model_identity
from clipmodule.eval.suite import run_suite
from clipmodule.models import create_model

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """A tiny checkpoint and a two-class image folder."""
    root = tmp_path_factory.mktemp("trust")
    torch.manual_seed(0)
    save_checkpoint(create_model("tiny-vit"), root / "tiny.safetensors")
    for name, colour in (("cat", "red"), ("dog", "blue")):
        for index in range(3):
            (root / "test" / name).mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (24, 24), colour).save(root / "test" / name / f"{index}.png")
    return root


@pytest.fixture(scope="module")
def model(work):
    from clipmodule.api import load

    return load(work / "tiny.safetensors")


def _run(model, config: SuiteConfig, store: Path, model_id: str = "sha256:m"):
    net, preprocess = model
    return run_suite(net, preprocess, config, model_id=model_id, store=store, say=lambda line: None)


def test_an_edited_template_or_class_name_file_at_the_same_path_is_run_again(work, model, tmp_path):
    templates, names = tmp_path / "templates.txt", tmp_path / "names.txt"
    templates.write_text("a photo of a {}.\n")
    names.write_text("cat\ndog\n")
    config = SuiteConfig(name="s", tasks=[TaskSpec("zeroshot", dataset=str(work / "test"), templates=str(templates),
                                                   classnames=str(names), name="zs")])
    store = tmp_path / "tasks"
    first = _run(model, config, store)
    assert first.reused == [] and first.rows[0]["templates"] == ["a photo of a {}."]
    os.utime(templates, ns=(1, 1))  # touched, same content: the stored result still counts
    assert _run(model, config, store).reused == ["zs"]
    templates.write_text("a drawing of a {}.\n")  # same path, other prompts: never the old result
    edited = _run(model, config, store)
    assert edited.reused == [] and edited.rows[0]["templates"] == ["a drawing of a {}."]
    names.write_text("kitten\npuppy\n")  # class names edited in place
    renamed = _run(model, config, store)
    assert renamed.reused == [] and renamed.rows[0]["classnames"] == ["kitten", "puppy"]
    assert _run(model, config, store).reused == ["zs"] and len(list(store.glob("*.json"))) == 3
    import hashlib

    kept = [json.loads(path.read_text())["inputs"] for path in store.glob("*.json")]
    assert {"templates": hashlib.sha256(b"a drawing of a {}.\n").hexdigest(),
            "classnames": hashlib.sha256(b"kitten\npuppy\n").hexdigest()} in kept  # each record names its files


def test_language_fewshot_k_and_the_probe_seed_are_in_the_key(work, model, tmp_path):
    probe = LinearProbeOptions(log10_c_range=(-1, 1), steps_per_decade=1, max_iter=50, threads=1, fewshot_epochs=1)
    spec = TaskSpec("linear-probe", train=str(work / "test"), test=str(work / "test"), fewshot_k=1, name="p")
    store = tmp_path / "tasks"
    assert _run(model, SuiteConfig(name="s", tasks=[spec], probe=probe), store).reused == []
    assert _run(model, SuiteConfig(name="s", tasks=[spec], probe=probe), store).reused == ["p"]
    reseeded = LinearProbeOptions(**{**probe.__dict__, "seed": 1})
    assert _run(model, SuiteConfig(name="s", tasks=[spec], probe=reseeded), store).reused == []
    two = TaskSpec(**{**spec.__dict__, "fewshot_k": 2})
    assert _run(model, SuiteConfig(name="s", tasks=[two], probe=probe), store).reused == []
    from clipmodule.eval.results import task_key

    assert task_key("m", {"language": "de"}, {}) != task_key("m", {"language": "fr"}, {})


def test_the_model_identity_follows_weights_by_name_config_and_tokenizer_files(work, model, tmp_path, monkeypatch):
    monkeypatch.setenv("CLIPMODULE_HOME", str(tmp_path / "home"))
    assert model_fingerprint("tiny-vit") == "name:tiny-vit"  # no local weights: load fails on it anyway
    torch.manual_seed(1)
    save_checkpoint(create_model("tiny-vit"), tmp_path / "home" / "tiny-vit.safetensors")
    named = model_fingerprint("tiny-vit")
    assert named.startswith("sha256:")
    torch.manual_seed(2)
    save_checkpoint(create_model("tiny-vit"), tmp_path / "home" / "tiny-vit.safetensors")  # other weights, same name
    assert model_fingerprint("tiny-vit") != named
    net = model[0]
    fingerprint = model_fingerprint(str(work / "tiny.safetensors"))
    plain = model_identity(fingerprint, net)
    assert plain.startswith(fingerprint) and model_identity(fingerprint, net) == plain
    folder = tmp_path / "tok"
    folder.mkdir()
    (folder / "tokenizer.json").write_text('{"version": "1"}')
    monkeypatch.setattr(net, "tokenizer_folder", folder, raising=False)
    with_tokenizer = model_identity(fingerprint, net)
    (folder / "tokenizer.json").write_text('{"version": "2"}')
    assert len({plain, with_tokenizer, model_identity(fingerprint, net)}) == 3
    monkeypatch.setattr(net, "tokenizer_folder", None, raising=False)
    monkeypatch.setattr(net, "preprocess_cfg", {"mean": [0.5] * 3}, raising=False)  # another preprocessing
    assert model_identity(fingerprint, net) != plain


def test_a_collection_writes_its_results_before_mlflow(work, tmp_path, monkeypatch, capsys):
    import clipmodule.tracking.mlflow as tracking

    def unreachable(*args, **kwargs):
        raise ClipModuleError("http://tracking: MLflow logging failed (connection refused)")

    monkeypatch.setattr(tracking, "log_to_mlflow", unreachable)
    suite = {"name": "many", "output": str(tmp_path / "out"), "models": [str(work / "tiny.safetensors")],
             "tasks": [{"task": "zeroshot", "dataset": str(work / "test"), "templates": "simple", "name": "pets"}]}
    (tmp_path / "suite.yaml").write_text(yaml.safe_dump(suite))
    assert clipmodule(["eval", "suite", "-c", str(tmp_path / "suite.yaml"), "--tracking.uri", "none"]) == 2
    assert capsys.readouterr().err.strip().endswith("MLflow logging failed (connection refused)")
    record = json.loads((tmp_path / "out" / "many.json").read_text())  # the results survived the failure
    assert record["models"][0]["rows"][0]["name"] == "pets" and (tmp_path / "out" / "many.md").is_file()
    entry = record["models"][0]
    assert entry["model_id"] == f"{entry['model_sha']}+setup:{entry['model_id'].rsplit(':', 1)[1]}"


def test_shipped_templates_changed_by_a_package_upgrade_are_run_again(model, tmp_path, monkeypatch):
    """`templates: clip_benchmark` names no file: the key holds the class names and templates as resolved."""
    import clipmodule.eval.names as names
    from tests.clipmodule.eval.readers.copies import write_fer2013_folders

    write_fer2013_folders(tmp_path / "fer2013")
    config = SuiteConfig(name="s", tasks=[TaskSpec("zeroshot", dataset="fer2013", root=str(tmp_path),
                                                   templates="clip_benchmark", name="fer")])
    store = tmp_path / "tasks"
    assert _run(model, config, store).reused == [] and _run(model, config, store).reused == ["fer"]
    shipped = names._json

    def upgraded(name: str) -> dict:
        lists = shipped(name)
        return {**lists, "fer2013": ["a face that looks {c}."]} if "templates" in name else lists

    monkeypatch.setattr(names, "_json", upgraded)  # a newer release's template list
    again = _run(model, config, store)
    assert again.reused == [] and again.rows[0]["templates"] == ["a face that looks {c}."]
    assert _run(model, config, store).reused == ["fer"]
