"""The registry's answers to a missing or incomplete copy, unknown names and splits; named datasets reached
through `eval.readers.specs` as evaluation reads them (transform applied, class names overridden, wrong task
refused)."""

from __future__ import annotations

import pytest

from clipmodule.errors import ClipModuleError
from clipmodule.eval.readers import (
    check_dataset,
    known_datasets,
    open_classification,
    open_dataset,
    open_retrieval,
    table,
)
from tests.clipmodule.eval.readers import copies


def test_known_datasets_cover_the_issue_list_and_the_readme_table():
    names = set(known_datasets())
    assert {"cifar10", "cifar100", "mnist", "stl10", "svhn", "food101", "flowers", "dtd", "pets", "caltech101",
            "sun397", "country211", "fer2013", "gtsrb", "eurosat", "resisc45", "pcam", "renderedsst2",
            "fgvc_aircraft", "cars", "voc2007_multilabel", "imagenet1k", "imagenetv2", "imagenet_sketch",
            "imagenet-a", "imagenet-r", "objectnet", "flickr8k", "flickr30k", "mscoco_captions", "wds"} <= names
    rows = table().splitlines()
    assert len(rows) == 2 + len(names) and all(row.count("|") == 5 for row in rows)


def test_a_missing_root_and_an_incomplete_copy_say_what_was_expected(tmp_path):
    with pytest.raises(ClipModuleError, match=r"^cifar10: dataset root .*nowhere is not a folder$"):
        open_dataset("cifar10", tmp_path / "nowhere")
    with pytest.raises(ClipModuleError, match=r"^cifar10 \(test\): .*/cifar-10-batches-py is missing test_batch, "
                                              r"batches\.meta \(expected there: test_batch, batches\.meta\)$"):
        open_dataset("cifar10", tmp_path)
    copies.write_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    check_dataset("cifar10", tmp_path, "test")
    with pytest.raises(ClipModuleError, match=r"cifar10 \(train\): .* is missing data_batch_3 \(expected there: "
                                              r"data_batch_1, data_batch_2, data_batch_3"):
        check_dataset("cifar10", tmp_path, "train")
    with pytest.raises(ClipModuleError, match=r"mnist \(test\): .*MNIST/raw is missing t10k-images-idx3-ubyte or "
                                              r"t10k-images-idx3-ubyte\.gz"):
        open_dataset("mnist", tmp_path)


def test_unknown_names_and_splits(tmp_path):
    with pytest.raises(ClipModuleError, match=r"^cifar11: unknown benchmark dataset \(known: caltech101, cars"):
        open_dataset("cifar11", tmp_path)
    with pytest.raises(ClipModuleError, match=r"^pets: no split 'train' \(splits: trainval, test\)$"):
        open_dataset("pets", tmp_path, "train")


def test_aliases_name_the_same_reader(tmp_path):
    copies.write_pcam(tmp_path)
    assert open_dataset("patch_camelyon", tmp_path).labels() == open_dataset("pcam", tmp_path).labels() == [0, 1]


def test_sources_open_named_datasets_for_the_evaluations(tmp_path):
    copies.write_cifar10(tmp_path)
    dataset = open_classification("cifar10", lambda image: image.size, root=str(tmp_path), split="train")
    assert dataset.split == "train" and dataset[0] == ((32, 32), 1)
    renamed = open_classification("cifar10", lambda image: image, ["plane", "car", "bird"], root=str(tmp_path))
    assert renamed.classnames == ["plane", "car", "bird"] and renamed.split == "test"
    with pytest.raises(ClipModuleError, match="has 3 classes but 2 class names were given"):
        open_classification("cifar10", lambda image: image, ["a", "b"], root=str(tmp_path))
    with pytest.raises(ClipModuleError, match=r"cifar10: a benchmark dataset; give the folder of its local copy"):
        open_classification("cifar10", lambda image: image)
    with pytest.raises(ClipModuleError, match=r"cifar10: a zeroshot classification dataset, not a retrieval one"):
        open_retrieval("cifar10", lambda image: image, root=str(tmp_path))


def test_a_probe_train_split_reads_trainval_where_that_is_the_training_split(tmp_path):
    from tests.clipmodule.eval.readers.test_folders import write_eurosat, write_pets

    write_pets(tmp_path)
    assert open_classification("pets", lambda image: image, root=str(tmp_path), split="train").split == "trainval"
    write_eurosat(tmp_path)
    with pytest.raises(ClipModuleError, match=r"eurosat: no training split \(splits: all\)"):
        open_classification("eurosat", lambda image: image, root=str(tmp_path), split="train")
