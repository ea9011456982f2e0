"""Folder-per-class datasets (EuroSAT, RESISC45, Caltech-101, Country211, Rendered SST2, GTSRB, SUN397) and the
annotation-list ones (Food-101, Flowers-102, DTD, Pets, FGVC-Aircraft, Stanford Cars), from tiny copies laid
out as each is distributed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from clipmodule.errors import ClipModuleError
from clipmodule.eval.readers import open_dataset
from tests.clipmodule.eval.readers.copies import SPLIT_LEVEL, decode, save


def write_eurosat(root: Path) -> dict:
    for label, cls in enumerate(["AnnualCrop", "Forest", "SeaLake"]):
        for n in range(2):
            save(root / "eurosat" / "2750" / cls / f"{cls}_{n + 1}.jpg", label, "all", 64)
    return {"all": (["AnnualCrop", "Forest", "SeaLake"], [0, 0, 1, 1, 2, 2])}


def write_resisc45(root: Path) -> dict:
    for label, cls in enumerate(["airplane", "golf_course"]):
        save(root / "NWPU-RESISC45" / cls / f"{cls}_001.jpg", label, "all")
    return {"all": (["airplane", "golf course"], [0, 1])}


def write_caltech101(root: Path) -> dict:
    for label, cls in enumerate(["BACKGROUND_Google", "Faces", "Faces_easy", "accordion"]):
        save(root / "caltech101" / "101_ObjectCategories" / cls / "image_0001.jpg", label, "all")
    return {"all": (["BACKGROUND Google", "Faces", "Faces easy", "accordion"], [0, 1, 2, 3])}


def write_country211(root: Path) -> dict:
    for split in ("train", "valid", "test"):
        for label, code in enumerate(["AD", "AE", "ZW"]):
            save(root / "country211" / split / code / f"{label}.jpg", label, split)
    return {split: (["AD", "AE", "ZW"], [0, 1, 2]) for split in ("train", "valid", "test")}


def write_renderedsst2(root: Path) -> dict:
    for split, folder in (("train", "train"), ("val", "valid"), ("test", "test")):
        for label, cls in enumerate(["negative", "positive"]):
            save(root / "rendered-sst2" / folder / cls / f"{label}.png", label, split)
    return {split: (["negative", "positive"], [0, 1]) for split in ("train", "val", "test")}


def write_gtsrb(root: Path) -> dict:
    base = root / "gtsrb"
    for label in (0, 2):
        save(base / "GTSRB" / "Training" / f"{label:05d}" / f"00000_0000{label}.ppm", label, "train")
        (base / "GTSRB" / "Training" / f"{label:05d}" / f"GT-{label:05d}.csv").write_text("Filename;ClassId\n")
    rows = ["Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId"]
    for number, label in enumerate([1, 0, 1]):
        save(base / "GTSRB" / "Final_Test" / "Images" / f"{number:05d}.ppm", label, "test")
        rows.append(f"{number:05d}.ppm;16;16;0;0;15;15;{label}")
    (base / "GT-final_test.csv").write_text("\n".join(rows) + "\n")
    names = [str(n) for n in range(43)]
    return {"train": (names, [0, 2]), "test": (names, [1, 0, 1])}


def write_sun397(root: Path) -> dict:
    base = root / "SUN397"
    base.mkdir(parents=True)
    (base / "ClassName.txt").write_text("/a/abbey\n/b/bakery/shop\n/z/zoo\n")
    files = {"a/abbey/sun_aaa.jpg": 0, "b/bakery/shop/sun_bbb.jpg": 1, "z/zoo/sun_ccc.jpg": 2, "a/abbey/sun_ddd.jpg": 0}
    for path, label in files.items():
        save(base / path, label, "all")
    (base / "Partitions").mkdir()
    (base / "Partitions" / "Training_01.txt").write_text("/a/abbey/sun_ddd.jpg\n/z/zoo/sun_ccc.jpg\n")
    (base / "Partitions" / "Testing_01.txt").write_text("/b/bakery/shop/sun_bbb.jpg\n")
    names = ["abbey", "bakery shop", "zoo"]
    return {"all": (names, [0, 0, 1, 2]), "train": (names, [0, 2]), "test": (names, [1])}


def write_food101(root: Path) -> dict:
    base = root / "food-101"
    meta = {"train": {"apple_pie": ["apple_pie/1005649"], "baby_back_ribs": ["baby_back_ribs/1", "baby_back_ribs/2"]},
            "test": {"baby_back_ribs": ["baby_back_ribs/3"], "apple_pie": ["apple_pie/4"]}}
    (base / "meta").mkdir(parents=True)
    for split, listing in meta.items():
        (base / "meta" / f"{split}.json").write_text(json.dumps(listing))
        for cls, images in listing.items():
            for image in images:
                save(base / "images" / f"{image}.jpg", ["apple_pie", "baby_back_ribs"].index(cls), split)
    (base / "meta" / "classes.txt").write_text("apple_pie\nbaby_back_ribs\n")
    # items in the JSON's order (torchvision's), labels by the sorted class names
    return {"train": (["apple pie", "baby back ribs"], [0, 1, 1]), "test": (["apple pie", "baby back ribs"], [1, 0])}


def write_flowers(root: Path) -> dict:
    from scipy.io import savemat

    base = root / "flowers-102"
    labels = [77, 77, 1, 5, 1, 102]  # 1-based classes of image_00001 … image_00006
    splits = {"train": [3, 1], "val": [4], "test": [6, 2, 5]}
    for split, ids in splits.items():
        for image in ids:
            save(base / "jpg" / f"image_{image:05d}.jpg", (labels[image - 1] - 1) % 8, split)
    savemat(base / "imagelabels.mat", {"labels": np.asarray([labels])})
    savemat(base / "setid.mat", {"trnid": np.asarray([splits["train"]]), "valid": np.asarray([splits["val"]]),
                                 "tstid": np.asarray([splits["test"]])})
    names = [str(n) for n in range(1, 103)]
    return {split: (names, [labels[image - 1] - 1 for image in ids]) for split, ids in splits.items()}


def write_dtd(root: Path) -> dict:
    base = root / "dtd" / "dtd"
    listing = {"train": ["banded/banded_0002.jpg", "zigzagged/zigzagged_0001.jpg"], "val": ["banded/banded_0004.jpg"],
               "test": ["zigzagged/zigzagged_0003.jpg", "banded/banded_0005.jpg"]}
    (base / "labels").mkdir(parents=True)
    for split, entries in listing.items():
        (base / "labels" / f"{split}1.txt").write_text("\n".join(entries) + "\n")
        (base / "labels" / f"{split}2.txt").write_text("banded/banded_0009.jpg\n")  # another partition, not read
        for entry in entries:
            save(base / "images" / entry, int(entry.startswith("zigzagged")), split)
    return {"train": (["banded", "zigzagged"], [0, 1]), "val": (["banded", "zigzagged"], [0]),
            "test": (["banded", "zigzagged"], [1, 0])}


def write_pets(root: Path) -> dict:
    base = root / "oxford-iiit-pet"
    lines = {"trainval": ["Abyssinian_100 1 1 1", "american_bulldog_10 2 2 1", "Bengal_1 3 1 2"],
             "test": ["Bengal_2 3 1 2", "Abyssinian_2 1 1 1"]}
    (base / "annotations").mkdir(parents=True)
    for split, entries in lines.items():
        (base / "annotations" / f"{split}.txt").write_text("\n".join(entries) + "\n")
        for entry in entries:
            image, label = entry.split()[:2]
            save(base / "images" / f"{image}.jpg", int(label) - 1, split)
    return {"trainval": (["Abyssinian", "American Bulldog", "Bengal"], [0, 1, 2]),
            "test": (["Abyssinian", "American Bulldog", "Bengal"], [2, 0])}


def write_fgvc_aircraft(root: Path) -> dict:
    base = root / "fgvc-aircraft-2013b" / "data"
    base.mkdir(parents=True)
    variants = ["707-320", "A300B4", "F/A-18"]
    (base / "variants.txt").write_text("\n".join(variants) + "\n")
    listing = {"train": [("0034309", 0), ("1514522", 2)], "val": [("0062765", 1)], "trainval": [("0034309", 0)],
               "test": [("1916245", 2), ("0062777", 1)]}
    for split, entries in listing.items():
        (base / f"images_variant_{split}.txt").write_text("".join(f"{i} {variants[k]}\n" for i, k in entries))
        for image, label in entries:
            if not (base / "images" / f"{image}.jpg").exists():
                save(base / "images" / f"{image}.jpg", label, "train" if split == "trainval" else split)
    return {split: (variants, [label for _, label in entries]) for split, entries in listing.items()}


def write_cars(root: Path) -> dict:
    from scipy.io import savemat

    base = root / "stanford_cars"
    names = ["AM General Hummer SUV 2000", "Acura RL Sedan 2012", "Audi TT RS Coupe 2012"]
    record = [("bbox_x1", "O"), ("bbox_y1", "O"), ("bbox_x2", "O"), ("bbox_y2", "O"), ("class", "O"), ("fname", "O")]
    splits = {"train": [("00001.jpg", 3), ("00002.jpg", 1)], "test": [("00001.jpg", 2), ("00002.jpg", 2)]}
    (base / "devkit").mkdir(parents=True)
    for split, entries in splits.items():
        annotations = np.array([(1, 1, 15, 15, label, fname) for fname, label in entries], dtype=record)
        target = base / ("devkit/cars_train_annos.mat" if split == "train" else "cars_test_annos_withlabels.mat")
        savemat(target, {"annotations": annotations.reshape(1, -1)})
        for fname, label in entries:
            save(base / f"cars_{split}" / fname, label - 1, split)
    savemat(base / "devkit" / "cars_meta.mat", {"class_names": np.array([names], dtype=object)})
    return {split: (names, [label - 1 for _, label in entries]) for split, entries in splits.items()}


WRITERS = {"eurosat": write_eurosat, "resisc45": write_resisc45, "caltech101": write_caltech101,
           "country211": write_country211, "renderedsst2": write_renderedsst2, "gtsrb": write_gtsrb,
           "sun397": write_sun397, "food101": write_food101, "flowers": write_flowers, "dtd": write_dtd,
           "pets": write_pets, "fgvc_aircraft": write_fgvc_aircraft, "cars": write_cars}


@pytest.mark.parametrize("name", sorted(WRITERS))
def test_dataset_names_labels_and_splits(tmp_path, name):
    expected = WRITERS[name](tmp_path)
    for split, (classnames, labels) in expected.items():
        dataset = open_dataset(name, tmp_path, split)
        assert dataset.task == "zeroshot_classification" and dataset.split == split
        assert dataset.classnames == classnames, split
        assert dataset.labels() == labels, split
        for index in range(len(dataset)):
            image, label = dataset[index]
            level = SPLIT_LEVEL["all" if name == "sun397" else "train" if split == "trainval" else split]
            assert decode(image) == (label % 8, level), (split, index)  # SUN397's splits share its images


def test_the_folder_itself_may_be_given_as_root(tmp_path):
    write_food101(tmp_path)
    assert open_dataset("food101", tmp_path / "food-101", "test").labels() == [1, 0]


def test_a_dataset_without_an_official_split_refuses_train(tmp_path):
    write_eurosat(tmp_path)
    with pytest.raises(ClipModuleError, match=r"eurosat: no split 'train' \(splits: all\)"):
        open_dataset("eurosat", tmp_path, "train")
    assert len(open_dataset("eurosat", tmp_path)) == 6  # the default is the whole set, as CLIP_benchmark reads it
