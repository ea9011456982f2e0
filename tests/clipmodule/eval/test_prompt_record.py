"""Every evaluation record states what it prompted with: the class names in label order (class i is label i)
and the templates, in the JSON of `eval zeroshot` and `eval suite` and in the MLflow run (its record artifact).
EuroSAT with OpenAI's names is the case that was wrong: label 0 (AnnualCrop) must be "annual crop land"."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from clipmodule.checkpoints.io import save_checkpoint
from clipmodule.cli import main as clipmodule
from clipmodule.eval.names import templates_for
from clipmodule.models import create_model
from tests.clipmodule.eval import benchmark_labels as labels
from tests.clipmodule.eval.readers.copies import save

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py
EUROSAT_OPENAI = ["annual crop land", "forest", "brushland or shrubland", "highway or road",
                  "industrial buildings or commercial buildings", "pasture land", "permanent crop land",
                  "residential buildings or homes or apartments", "river", "lake or sea"]


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("prompt_record")
    torch.manual_seed(0)
    save_checkpoint(create_model("tiny-vit"), root / "tiny.safetensors")
    for label, folder in enumerate(labels.EUROSAT):  # the full 10 classes, one image each
        save(root / "data" / "eurosat" / "2750" / folder / f"{folder}_1.jpg", label % 8, "all")
    return root


def _artifact(uri: str, run_id: str) -> dict:
    from mlflow.tracking import MlflowClient

    tracker = MlflowClient(uri)
    assert tracker.get_run(run_id).info.status == "FINISHED"
    return json.loads(Path(tracker.download_artifacts(run_id, "eval_record.json")).read_text())


def test_zeroshot_record_and_mlflow_run_state_class_names_and_templates(work, tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    output = tmp_path / "zs.json"
    code = clipmodule(["eval", "zeroshot", "--model", str(work / "tiny.safetensors"), "--dataset", "eurosat",
                       "--dataset_root", str(work / "data"), "--templates", "openai", "--output", str(output),
                       "--tracking.uri", uri])
    assert code == 0, capsys.readouterr().err
    record = json.loads(output.read_text())
    assert record["classnames"] == EUROSAT_OPENAI and record["templates"] == templates_for("eurosat", "openai")
    assert "prompts" not in record["metrics"] and record["metrics"]["num_samples"] == 10
    logged = _artifact(uri, record["mlflow_run_id"])
    assert logged["classnames"] == EUROSAT_OPENAI and logged["templates"] == record["templates"]
    assert (tmp_path / "mlartifacts").is_dir()  # beside the store, not in the working folder


def test_suite_record_and_mlflow_run_state_each_rows_prompts(work, tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    suite = {"name": "prompts", "model": str(work / "tiny.safetensors"), "output": str(tmp_path / "out"),
             "tasks": [{"name": "eurosat", "task": "zeroshot", "dataset": "eurosat", "root": str(work / "data"),
                        "templates": "openai"},
                       {"name": "eurosat-cb", "task": "zeroshot", "dataset": "eurosat", "root": str(work / "data"),
                        "templates": "clip_benchmark"}]}
    (tmp_path / "suite.yaml").write_text(yaml.safe_dump(suite))
    assert clipmodule(["eval", "suite", "-c", str(tmp_path / "suite.yaml"), "--tracking.uri", uri]) == 0, \
        capsys.readouterr().err
    record = json.loads((tmp_path / "out" / "prompts.json").read_text())
    rows = {row["name"]: row for row in record["rows"]}
    assert rows["eurosat"]["classnames"] == EUROSAT_OPENAI == rows["eurosat-cb"]["classnames"]
    assert rows["eurosat"]["templates"] == templates_for("eurosat", "openai")
    assert rows["eurosat-cb"]["templates"] == templates_for("eurosat", "clip_benchmark")
    assert all("prompts" not in metrics for metrics in record["metrics"].values())
    logged = _artifact(uri, record["mlflow_run_id"])
    assert [row["classnames"] for row in logged["rows"]] == [EUROSAT_OPENAI, EUROSAT_OPENAI]
    # a resumed suite reuses the rows and still states their prompts
    assert clipmodule(["eval", "suite", "-c", str(tmp_path / "suite.yaml"), "--tracking.uri", "none"]) == 0
    again = json.loads((tmp_path / "out" / "prompts.json").read_text())
    assert again["reused"] == ["eurosat", "eurosat-cb"] and again["rows"] == record["rows"]
