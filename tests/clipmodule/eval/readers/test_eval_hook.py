"""Named benchmark datasets through the real evaluation paths: `clipmodule eval zeroshot --dataset cifar10
--dataset_root DIR`, VOC2007's mAP from a suite row (against scikit-learn on the model's own scores), and a
suite's linear probe whose train and test splits share a name but not their features."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from clipmodule.checkpoints.io import save_checkpoint
from clipmodule.cli import main as clipmodule
from clipmodule.eval.options import LinearProbeOptions, LoaderOptions, SuiteConfig, TaskSpec
from clipmodule.models import create_model
from tests.clipmodule.eval.readers import copies
from tests.clipmodule.eval.readers.test_voc import write_voc

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("readers_eval")
    torch.manual_seed(0)
    save_checkpoint(create_model("tiny-vit"), root / "tiny.safetensors")
    copies.write_cifar10(root / "data")
    write_voc(root / "data", per_class_lists=False)
    return root


def test_zeroshot_command_on_a_named_dataset(tiny, capsys):
    from clipmodule.api import load
    from clipmodule.eval.readers import open_classification
    from clipmodule.eval.tasks import zeroshot_classification

    output = tiny / "zs.json"
    code = clipmodule(["eval", "zeroshot", "--model", str(tiny / "tiny.safetensors"), "--dataset", "cifar10",
                       "--dataset_root", str(tiny / "data"), "--templates", "simple", "--output", str(output),
                       "--tracking.uri", "none"])
    assert code == 0, capsys.readouterr().err
    record = json.loads(output.read_text())
    assert record["metrics"]["num_samples"] == 3  # the test batch, not the training batches
    model, preprocess = load(tiny / "tiny.safetensors")
    dataset = open_classification("cifar10", preprocess, root=str(tiny / "data"))
    direct = zeroshot_classification(model, dataset, dataset.classnames, ["a photo of a {}."])
    assert record["metrics"] == pytest.approx(direct)
    code = clipmodule(["eval", "zeroshot", "--model", str(tiny / "tiny.safetensors"), "--dataset", "cifar10",
                       "--dataset_root", str(tiny / "nowhere"), "--tracking.uri", "none"])
    assert code == 2 and "cifar10: dataset root" in capsys.readouterr().err


def test_voc_multilabel_row_scores_mean_average_precision(tiny):
    from sklearn.metrics import average_precision_score

    from clipmodule.api import load
    from clipmodule.eval.classifier import build_zeroshot_classifier, zeroshot_logits
    from clipmodule.eval.readers import open_dataset
    from clipmodule.eval.suite import run_task
    from clipmodule.tokenizer import tokenize

    model, preprocess = load(tiny / "tiny.safetensors")
    spec = TaskSpec("zeroshot", dataset="voc2007_multilabel", root=str(tiny / "data"), templates="simple")
    metrics = run_task(model, preprocess, spec, LoaderOptions(batch_size=2), LinearProbeOptions())
    assert metrics["num_samples"] == 3
    dataset = open_dataset("voc2007_multilabel", tiny / "data").with_transform(preprocess)
    with torch.no_grad():
        classifier = build_zeroshot_classifier(model, tokenize, dataset.classnames, ["a photo of a {}."])
        images = torch.stack([dataset[i][0] for i in range(3)])
        scores = zeroshot_logits(model.encode_image(images, normalize=True), classifier).numpy()
    targets = np.stack([dataset[i][1].numpy() for i in range(3)]).astype(int)
    present = targets.sum(axis=0) > 0
    expected = average_precision_score(targets[:, present], scores[:, present], average=None).mean()
    assert metrics["mean_average_precision"] == pytest.approx(expected, abs=1e-5)


def test_suite_probe_train_and_test_splits_of_one_name_are_different_data(tiny):
    from clipmodule.api import load
    from clipmodule.eval.suite import run_suite

    model, preprocess = load(tiny / "tiny.safetensors")
    root = str(tiny / "data")
    config = SuiteConfig(tasks=[TaskSpec("zeroshot", dataset="cifar10", root=root, templates="simple"),
                                TaskSpec("linear-probe", train="cifar10", test="cifar10", root=root)],
                         probe=LinearProbeOptions(coarse_step=6.0, steps_per_decade=1, max_iter=50))
    run = run_suite(model, preprocess, config, say=lambda line: None)
    zeroshot, probe = (row["metrics"] for row in run.rows)
    assert zeroshot["num_samples"] == probe["num_samples"] == 3 and probe["num_train"] == 10
