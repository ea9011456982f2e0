"""Array-stored datasets (CIFAR, MNIST, STL-10, SVHN, PCam, FER2013) from tiny copies in their own formats;
the CIFAR pickle reader refuses a pickle that carries code."""

from __future__ import annotations

import pickle

import pytest

from clipmodule.errors import ClipModuleError
from clipmodule.eval.readers import open_dataset
from tests.clipmodule.eval.readers import copies

# name, writer, {split: (labels in order, classnames)}
CASES = {
    "cifar10": (copies.write_cifar10, {"train": ([1, 2, 2, 0, 0, 1, 1, 2, 2, 0], ["airplane", "automobile", "bird"]),
                                       "test": ([2, 0, 1], ["airplane", "automobile", "bird"])}),
    "cifar100": (copies.write_cifar100, {"train": ([0, 1, 2, 1], ["apple", "aquarium fish", "baby"]),
                                         "test": ([2, 1], ["apple", "aquarium fish", "baby"])}),
    "mnist": (copies.write_mnist, {"train": ([0, 1, 2, 3], [str(d) for d in range(10)]),
                                   "test": ([3, 1], [str(d) for d in range(10)])}),
    "stl10": (copies.write_stl10, {"train": ([0, 1, 2], ["airplane", "bird", "car"]),
                                   "test": ([2, 0], ["airplane", "bird", "car"])}),
    "svhn": (copies.write_svhn, {"train": ([0, 1, 2], [str(d) for d in range(10)]),
                                 "test": ([2, 0, 0, 1], [str(d) for d in range(10)])}),
    "pcam": (copies.write_pcam, {"train": ([0, 1, 1], ["0", "1"]), "val": ([1, 0], ["0", "1"]),
                                 "test": ([0, 1], ["0", "1"])}),
}


def _check(dataset, split: str, labels: list[int], classnames: list[str]) -> None:
    assert dataset.task == "zeroshot_classification" and dataset.split == split
    assert dataset.classnames == classnames
    assert dataset.labels() == labels and len(dataset) == len(labels)
    for index in range(len(dataset)):
        image, label = dataset[index]
        assert image.mode == "RGB"
        assert copies.decode(image) == (label, copies.SPLIT_LEVEL[split]), f"item {index}"


@pytest.mark.parametrize("name", sorted(CASES))
def test_array_dataset_names_labels_and_splits(tmp_path, name):
    write, splits = CASES[name]
    write(tmp_path)
    for split, (labels, classnames) in splits.items():
        _check(open_dataset(name, tmp_path, split), split, labels, classnames)


def test_mnist_reads_uncompressed_idx_files_too(tmp_path):
    copies.write_mnist(tmp_path, gz=False)
    _check(open_dataset("mnist", tmp_path / "MNIST" / "raw", "test"), "test", [3, 1], [str(d) for d in range(10)])


def test_fer2013_csv_labels_mean_the_same_classes_as_the_image_folders(tmp_path):
    """The CSV codes emotions in another order than the Kaggle folders; both copies name each image alike."""
    copies.write_fer2013_csv(tmp_path / "csv")
    copies.write_fer2013_folders(tmp_path / "folders")
    csv_order = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
    for split, wanted in (("train", [0, 4, 6]), ("test", [3, 5])):
        dataset = open_dataset("fer2013", tmp_path / "csv", split)
        assert [copies.decode(dataset[i][0])[0] for i in range(len(dataset))] == wanted  # the CSV's own codes
        assert [dataset.classnames[label] for label in dataset.labels()] == [csv_order[code] for code in wanted]
        folders = open_dataset("fer2013", tmp_path / "folders", split)
        assert folders.classnames == dataset.classnames
        assert [folders.classnames[label] for label in folders.labels()] == folders.classnames
        assert all(copies.decode(folders[i][0]) == (folders[i][1], copies.SPLIT_LEVEL[split]) for i in range(7))


def test_transform_is_applied_when_set(tmp_path):
    copies.write_cifar10(tmp_path)
    plain = open_dataset("cifar10", tmp_path)
    dataset = plain.with_transform(lambda image: ("transformed", image.size))
    assert dataset[0] == (("transformed", (32, 32)), 2)
    assert plain.transform is None and plain[0][0].size == (32, 32)


class Payload:
    def __reduce__(self):
        import os

        return (os.system, ("touch pwned",))


def test_a_cifar_pickle_carrying_code_is_refused_before_it_runs(tmp_path, monkeypatch):
    copies.write_cifar10(tmp_path)
    batch = tmp_path / "cifar-10-batches-py" / "test_batch"
    batch.write_bytes(pickle.dumps({"labels": [0], "data": Payload()}, protocol=2))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ClipModuleError, match=r"test_batch: refused: the pickle calls posix\.system"):
        open_dataset("cifar10", tmp_path, "test")
    assert not (tmp_path / "pwned").exists()


def test_labels_past_the_class_names_are_refused(tmp_path):
    copies.write_cifar10(tmp_path)
    meta = tmp_path / "cifar-10-batches-py" / "batches.meta"
    meta.write_bytes(pickle.dumps({"label_names": ["airplane", "automobile"]}, protocol=2))
    with pytest.raises(ClipModuleError, match=r"cifar10 \(test\) .* label 2 is not an index into its 2 classes"):
        open_dataset("cifar10", tmp_path, "test")
