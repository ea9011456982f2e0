"""ImageNet-1k and its shifts as folders: labels by wnid (never by folder order), the 200-class subsets of A and
R, V2's numbered folders, ObjectNet's mapped classes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clipmodule.errors import ClipModuleError
from clipmodule.eval.readers import open_dataset
from clipmodule.eval.readers.imagenet import imagenet_classnames, imagenet_wnids, subset_wnids
from tests.clipmodule.eval.readers.copies import SPLIT_LEVEL, decode, save


def test_the_shipped_class_lists():
    wnids, names = imagenet_wnids(), imagenet_classnames()
    assert len(wnids) == len(set(wnids)) == 1000 and wnids == sorted(wnids) and len(names) == 1000
    assert (wnids[0], names[0]) == ("n01440764", "tench") and wnids[-1] == "n15075141"
    for subset in ("imagenet_a", "imagenet_r"):
        chosen = subset_wnids(subset)
        assert len(chosen) == len(set(chosen)) == 200 and chosen == sorted(chosen) and set(chosen) <= set(wnids)
    assert subset_wnids("imagenet_a") != subset_wnids("imagenet_r")


def _wnid_folders(folder: Path, wnids: list[str], split: str, suffix: str = ".JPEG") -> None:
    for position, wnid in enumerate(wnids):
        for n in range(2):
            save(folder / wnid / f"{wnid}_{n}{suffix}", position, split)


def test_imagenet1k_labels_by_wnid_and_reads_val_as_test(tmp_path):
    wnids = imagenet_wnids()
    chosen = [wnids[0], wnids[1], wnids[999]]  # a copy missing classes must still label the others right
    _wnid_folders(tmp_path / "val", chosen, "test")
    _wnid_folders(tmp_path / "train", chosen[:2], "train")
    test = open_dataset("imagenet1k", tmp_path)
    assert test.split == "test" and test.classnames == imagenet_classnames()
    assert test.labels() == [0, 0, 1, 1, 999, 999]
    assert [decode(test[i][0]) for i in range(6)] == [(k, SPLIT_LEVEL["test"]) for k in (0, 0, 1, 1, 2, 2)]
    assert open_dataset("imagenet1k", tmp_path, "train").labels() == [0, 0, 1, 1]
    (tmp_path / "val" / "not_a_wnid").mkdir()
    with pytest.raises(ClipModuleError, match=r"imagenet1k: .*val has folder 'not_a_wnid', which is not one of"):
        open_dataset("imagenet1k", tmp_path, "val")


@pytest.mark.parametrize("name, subset, base", [("imagenet-a", "imagenet_a", "imagenet-a"),
                                                ("imagenet-r", "imagenet_r", "imagenet-r")])
def test_a_and_r_are_200_class_subsets(tmp_path, name, subset, base):
    chosen = subset_wnids(subset)
    _wnid_folders(tmp_path / base, [chosen[0], chosen[150]], "test", ".jpg")
    dataset = open_dataset(name, tmp_path)
    all_names = dict(zip(imagenet_wnids(), imagenet_classnames()))
    assert len(dataset.classnames) == 200 and dataset.classnames == [all_names[w] for w in chosen]
    assert dataset.labels() == [0, 0, 150, 150]
    assert [decode(dataset[i][0])[0] for i in range(4)] == [0, 0, 1, 1]
    outside = next(w for w in imagenet_wnids() if w not in set(chosen))
    (tmp_path / base / outside).mkdir()
    with pytest.raises(ClipModuleError, match=f"has folder '{outside}', which is not one of its 200 ImageNet wnids"):
        open_dataset(name, tmp_path)


def test_imagenetv2_folders_are_class_indices(tmp_path):
    folder = tmp_path / "ImageNetV2-matched-frequency"
    for position, index in enumerate([0, 7, 999]):
        save(folder / str(index) / f"{position}.jpeg", position, "test")
    dataset = open_dataset("imagenetv2", tmp_path, "test")
    assert dataset.classnames == imagenet_classnames()
    assert sorted(dataset.labels()) == [0, 7, 999]
    assert all(decode(dataset[i][0])[0] == [0, 7, 999].index(dataset[i][1]) for i in range(3))


def test_imagenet_sketch(tmp_path):
    _wnid_folders(tmp_path / "sketch", [imagenet_wnids()[0], imagenet_wnids()[5]], "test")
    dataset = open_dataset("imagenet_sketch", tmp_path)
    assert dataset.labels() == [0, 0, 5, 5] and len(dataset.classnames) == 1000


def test_objectnet_keeps_the_classes_mapped_to_imagenet(tmp_path):
    images = tmp_path / "objectnet-1.0" / "images"
    folders = {"alarm_clock": "Alarm clock", "banana": "Banana", "weight_scale": "Weight (exercise)"}
    for position, folder in enumerate(["alarm_clock", "banana", "weight_scale"]):
        save(images / folder / f"{position}.png", position, "test")
    mappings = tmp_path / "objectnet-1.0" / "mappings"
    mappings.mkdir()
    (mappings / "folder_to_objectnet_label.json").write_text(json.dumps(folders))
    (mappings / "objectnet_to_imagenet_1k.json").write_text(json.dumps({"Alarm clock": "analog clock; digital clock",
                                                                        "Banana": "banana"}))
    dataset = open_dataset("objectnet", tmp_path)
    assert dataset.classnames == ["alarm clock", "banana"] and dataset.labels() == [0, 1]
    assert [decode(dataset[i][0])[0] for i in range(2)] == [0, 1]
