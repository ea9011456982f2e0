"""One evaluation-data stack: every spec string (folder, CSV/TSV, shards, builtin, a benchmark name) goes through
one dispatcher, `open_data`, into one family of dataset classes; the second stack is gone."""

from __future__ import annotations

import importlib.util

import pytest
from PIL import Image

from clipmodule.errors import ClipModuleError
from clipmodule.eval.readers import BenchmarkDataset, CaptionedImages, LabelledImages, open_data
from clipmodule.eval.readers.items import ImageItems


def _folder(tmp_path):
    for name in ("cat", "dog"):
        (tmp_path / "images" / name).mkdir(parents=True)
        Image.new("RGB", (8, 8), (10, 20, 30)).save(tmp_path / "images" / name / "a.png")
    return tmp_path / "images"


def test_the_second_stack_is_gone():
    for old in ("datasets", "sources", "shards", "builtin"):
        assert importlib.util.find_spec(f"clipmodule.eval.{old}") is None, old


def test_one_dispatcher_one_family(tmp_path):
    folder = _folder(tmp_path)
    table = tmp_path / "captions.csv"
    table.write_text("path,caption\nimages/cat/a.png,a cat\nimages/cat/a.png,a small cat\n", encoding="utf-8")
    labelled = open_data(str(folder), None, "classification")
    captioned = open_data(str(table), None, "retrieval")
    digits = open_data("builtin:digits:test", None, "classification")
    assert isinstance(labelled, LabelledImages) and labelled.classnames == ["cat", "dog"]
    assert isinstance(captioned, CaptionedImages) and captioned.labels() == [["a cat", "a small cat"]]
    assert isinstance(digits, LabelledImages) and len(digits) > 0
    assert issubclass(BenchmarkDataset, ImageItems)
    assert all(isinstance(dataset, ImageItems) for dataset in (labelled, captioned, digits))
    assert labelled[0][0].size == (8, 8)  # no transform: the PIL image, as a benchmark's items read


def test_a_folder_is_no_retrieval_data_and_tasks_are_named(tmp_path):
    folder = _folder(tmp_path)
    with pytest.raises(ClipModuleError, match="retrieval data is a .csv/.tsv of path,caption"):
        open_data(str(folder), None, "retrieval")
    with pytest.raises(ValueError, match="unknown evaluation data task"):
        open_data(str(folder), None, "captioning")
