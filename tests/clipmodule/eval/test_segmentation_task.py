"""The `segmentation` task kind: builtin:shapes-seg's exact masks, a suite row, and a trained model above the
majority-class baseline."""

import numpy as np
import pytest
import torch

from clipmodule.eval.options import SegmentationSettings, SuiteConfig, TaskSpec
from clipmodule.eval.readers.seg_specs import open_segmentation
from clipmodule.eval.readers.segmentation import SHAPES_SEG_CLASSES, render_shape_scene
from clipmodule.eval.tasks import kind_of
from clipmodule.models import create_model


def test_shapes_seg_masks_are_exactly_the_drawn_pixels():
    image, labels = render_shape_scene(3)
    pixels = np.asarray(image)
    background = pixels[labels == 0]
    assert (background == background[0]).all()  # every background pixel has the background colour
    assert not (pixels[labels > 0] == background[0]).all(axis=-1).any()  # and no shape pixel has it
    dataset = open_segmentation("builtin:shapes-seg")
    assert len(dataset) == 64 and dataset.classnames == SHAPES_SEG_CLASSES and dataset.background_index == 0
    counts = np.bincount(np.concatenate([dataset[i][1].ravel() for i in range(len(dataset))]),
                         minlength=len(SHAPES_SEG_CLASSES))
    assert (counts > 0).all() and len(counts) == 4  # background, circle, square, triangle: the demo's shapes
    assert dataset.prompt_names[0].startswith("red background; green background;")  # named as the demo names them


def test_segmentation_row_runs_in_a_suite(tmp_path, monkeypatch):
    from clipmodule.eval.readers import segmentation
    from clipmodule.eval.suite import markdown_table, run_suite

    monkeypatch.setattr(segmentation, "SHAPES_SEG_COUNT", 4)  # four scenes: the wiring, not the score
    torch.manual_seed(0)
    model = create_model("tiny-vit").eval()
    spec = TaskSpec(task="segmentation", dataset="builtin:shapes-seg", templates="simple",
                    segmentation=SegmentationSettings(background_threshold=0.3))
    assert kind_of(spec).name == "segmentation"
    run = run_suite(model, None, SuiteConfig(tasks=[spec], output=str(tmp_path)), say=lambda line: None)
    metrics = run.rows[0]["metrics"]
    assert 0 <= metrics["mIoU"] <= 1 and set(metrics["per_class_iou"]) == set(SHAPES_SEG_CLASSES)
    assert metrics["num_images"] == 4 and "| mIoU | pixel acc |" in markdown_table(run.rows, "tiny")


def test_eval_segmentation_command_writes_a_record(tmp_path, monkeypatch, capsys):
    import json

    import clipmodule
    from clipmodule.cli import main
    from clipmodule.eval.readers import segmentation

    monkeypatch.setattr(segmentation, "SHAPES_SEG_COUNT", 2)
    torch.manual_seed(0)
    clipmodule.save_checkpoint(create_model("tiny-vit"), tmp_path / "tiny.safetensors")
    code = main(["eval", "segmentation", "--model", str(tmp_path / "tiny.safetensors"), "--dataset",
                 "builtin:shapes-seg", "--templates", "simple", "--segmentation.key_smoothing", "0.5",
                 "--tracking.uri", "none", "--output", str(tmp_path / "seg.json")])
    assert code == 0, capsys.readouterr().err
    record = json.loads((tmp_path / "seg.json").read_text())
    assert set(record["metrics"]["per_class_iou"]) == set(SHAPES_SEG_CLASSES)
    assert record["task_spec"]["segmentation"]["key_smoothing"] == 0.5


def test_majority_class_baseline_of_shapes_seg():
    """The bar a model must clear: all-background scores 0.149 mIoU (0.596 background IoU, 0 for the shapes)."""
    from clipmodule.eval.seg_metrics import confusion_matrix, segmentation_metrics

    dataset = open_segmentation("builtin:shapes-seg")
    labels = [dataset[index][1] for index in range(len(dataset))]
    matrix = sum(confusion_matrix(np.zeros_like(label), label, len(SHAPES_SEG_CLASSES)) for label in labels)
    metrics = segmentation_metrics(matrix, SHAPES_SEG_CLASSES)
    assert metrics["mIoU"] == pytest.approx(0.149, abs=0.001) and metrics["aAcc"] == pytest.approx(0.596, abs=0.001)


def test_a_suite_yaml_row_carries_its_segmentation_settings(tmp_path):
    from clipmodule.eval.cli import parse_command

    (tmp_path / "suite.yaml").write_text("model: m\ntasks:\n  - {task: segmentation, dataset: voc2012, root: /data, "
                                         "segmentation: {background_threshold: 0.5, stride: 224}}\n")
    row = parse_command("suite", ["-c", str(tmp_path / "suite.yaml")]).tasks[0]
    assert row.segmentation == SegmentationSettings(background_threshold=0.5, stride=224) and row.root == "/data"


def test_eval_segmentation_refuses_key_smoothing_with_a_background_threshold(tmp_path, capsys):
    import clipmodule
    from clipmodule.cli import main

    torch.manual_seed(0)
    clipmodule.save_checkpoint(create_model("tiny-vit"), tmp_path / "tiny.safetensors")
    code = main(["eval", "segmentation", "--model", str(tmp_path / "tiny.safetensors"), "--dataset",
                 "builtin:shapes-seg", "--templates", "simple", "--segmentation.key_smoothing", "1.0",
                 "--segmentation.background_threshold", "0.5", "--tracking.uri", "none"])
    assert code != 0 and "key_smoothing and background_threshold do not go together" in capsys.readouterr().err


def test_segmentation_settings_name_the_vit_path():
    from clipmodule.eval.tasks.segmentation import segment_options

    dataset = open_segmentation("builtin:shapes-seg")
    assert segment_options(dataset, SegmentationSettings(vit_path="released")).vit_path == "released"
    assert segment_options(dataset, SegmentationSettings()).vit_path == "value"


def test_a_row_whose_labels_name_their_source_is_reused(tmp_path, monkeypatch):
    """The record's prompts (with `labels_source`, e.g. Pascal Context's .mat release) are what the key hashes."""
    import dataclasses

    from clipmodule.eval.readers import seg_specs, segmentation
    from clipmodule.eval.suite import run_suite

    monkeypatch.setattr(segmentation, "SHAPES_SEG_COUNT", 2)
    plain = seg_specs.shapes_seg
    monkeypatch.setattr(seg_specs, "shapes_seg", lambda spec: dataclasses.replace(plain(spec), labels_source="x"))
    torch.manual_seed(0)
    model = create_model("tiny-vit").eval()
    spec = TaskSpec(task="segmentation", dataset="builtin:shapes-seg", templates="simple")
    config = SuiteConfig(tasks=[spec], output=str(tmp_path))
    store = tmp_path / "records"
    first = run_suite(model, None, config, model_id="m", store=store, say=lambda line: None)
    assert first.rows[0]["labels_source"] == "x" and not first.reused
    assert run_suite(model, None, config, model_id="m", store=store, say=lambda line: None).reused == [spec.label()]
