"""Skeleton copies of the benchmarks with their FULL class lists (`benchmark_labels`), in each distribution's
layout: one empty image file or a few bytes per split, enough for a reader to open the copy and name its
classes the way it does on the real data (folder names sorted, class files read, labels numbered)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tests.clipmodule.eval import benchmark_labels as labels
from tests.clipmodule.eval.readers import copies


def _touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()


def _folders(base: Path, classes: list[str], suffix: str = ".jpg") -> None:
    for cls in classes:
        _touch(base / cls / f"image_0001{suffix}")


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def _sun397(root: Path) -> None:
    base = root / "SUN397"
    _write(base / "ClassName.txt", "".join(f"/{name[0]}/{name}\n" for name in labels.SUN397))
    for name in labels.SUN397:  # a real copy has a folder of images for every class (the reader checks it)
        _touch(base / name[0] / name / "sun_aaa.jpg")


def _food101(root: Path) -> None:
    base = root / "food-101"
    _write(base / "meta" / "test.json", json.dumps({cls: [f"{cls}/1"] for cls in labels.FOOD101}))
    (base / "images").mkdir(parents=True)


def _dtd(root: Path) -> None:
    base = root / "dtd" / "dtd"
    _folders(base / "images", labels.DTD)
    _write(base / "labels" / "test1.txt", "".join(f"{cls}/image_0001.jpg\n" for cls in labels.DTD))


def _pets(root: Path) -> None:
    base = root / "oxford-iiit-pet"
    _write(base / "annotations" / "test.txt",
           "".join(f"{prefix}_1 {label + 1} 1 1\n" for label, prefix in enumerate(labels.PETS)))
    (base / "images").mkdir(parents=True)


def _flowers(root: Path) -> None:
    from scipy.io import savemat

    base = root / "flowers-102"
    (base / "jpg").mkdir(parents=True)
    savemat(base / "imagelabels.mat", {"labels": np.arange(1, 103)[None]})
    savemat(base / "setid.mat", {"trnid": np.asarray([[1]]), "valid": np.asarray([[2]]),
                                 "tstid": np.arange(1, 103)[None]})


def _gtsrb(root: Path) -> None:
    base = root / "gtsrb"
    (base / "GTSRB" / "Final_Test" / "Images").mkdir(parents=True)
    _write(base / "GT-final_test.csv", "Filename;ClassId\n" + "".join(f"{n:05d}.ppm;{n}\n" for n in range(43)))


def _aircraft(root: Path) -> None:
    base = root / "fgvc-aircraft-2013b" / "data"
    variants = labels.shipped("openai_prompts", "FGVCAircraft")["classes"]
    _write(base / "variants.txt", "".join(f"{variant}\n" for variant in variants))
    listed = "".join(f"{index:07d} {variant}\n" for index, variant in enumerate(variants))  # every variant once
    _write(base / "images_variant_test.txt", listed)
    (base / "images").mkdir()


def _cars(root: Path) -> None:
    from scipy.io import savemat

    base = root / "stanford_cars"
    names = labels.shipped("openai_prompts", "StanfordCars")["classes"]
    (base / "devkit").mkdir(parents=True)
    (base / "cars_test").mkdir()
    savemat(base / "devkit" / "cars_meta.mat", {"class_names": np.array([names], dtype=object)})
    record = np.array([(1, "00001.jpg"), (196, "00002.jpg")], dtype=[("class", "O"), ("fname", "O")])
    savemat(base / "cars_test_annos_withlabels.mat", {"annotations": record.reshape(1, -1)})


def _cifar(root: Path, folder: str, names: list[str], meta: str, names_key: str, batch: str, label_key: str) -> None:
    copies._pickle(root / folder / meta, {names_key: names})
    # one image per class: a real test split reaches every label (the reader refuses a list longer than that)
    copies._pickle(root / folder / batch, {"data": np.zeros((len(names), 3072), np.uint8),
                                           label_key: list(range(len(names)))})


def _stl10(root: Path) -> None:
    base = root / "stl10_binary"
    base.mkdir(parents=True)
    np.zeros(len(labels.STL10) * 3 * 96 * 96, np.uint8).tofile(base / "test_X.bin")
    np.arange(1, len(labels.STL10) + 1, dtype=np.uint8).tofile(base / "test_y.bin")  # every class once
    _write(base / "class_names.txt", "".join(f"{name}\n" for name in labels.STL10))


def _voc(root: Path) -> None:
    base = root / "VOCdevkit" / "VOC2007"
    _write(base / "ImageSets" / "Main" / "test.txt", "000001\n")
    _write(base / "Annotations" / "000001.xml", "<annotation><object><name>dog</name><bndbox><xmin>1</xmin>"
                                                 "<ymin>1</ymin><xmax>9</xmax><ymax>9</ymax></bndbox></object></annotation>")
    (base / "JPEGImages").mkdir()


WRITERS = {
    "eurosat": lambda root: _folders(root / "eurosat" / "2750", labels.EUROSAT),
    "resisc45": lambda root: _folders(root / "NWPU-RESISC45", labels.RESISC45),
    "caltech101": lambda root: _folders(root / "caltech101" / "101_ObjectCategories", labels.CALTECH101),
    "country211": lambda root: _folders(root / "country211" / "test", labels.COUNTRY211),
    "renderedsst2": lambda root: _folders(root / "rendered-sst2" / "test", ["negative", "positive"], ".png"),
    "sun397": _sun397, "food101": _food101, "dtd": _dtd, "pets": _pets, "flowers": _flowers, "gtsrb": _gtsrb,
    "fgvc_aircraft": _aircraft, "cars": _cars, "stl10": _stl10, "voc2007_multilabel": _voc,
    "cifar10": lambda root: _cifar(root, "cifar-10-batches-py", labels.CIFAR10, "batches.meta", "label_names",
                                   "test_batch", "labels"),
    "cifar100": lambda root: _cifar(root, "cifar-100-python", labels.CIFAR100, "meta", "fine_label_names", "test",
                                    "fine_labels"),
    "mnist": copies.write_mnist, "pcam": copies.write_pcam, "fer2013": copies.write_fer2013_csv,
    "svhn": copies.write_svhn,
    "imagenet1k": lambda root: _folders(root / "val", ["n01440764"], ".JPEG"),
    "imagenetv2": lambda root: _folders(root / "ImageNetV2-matched-frequency", ["0"], ".jpeg"),
    "imagenet_sketch": lambda root: _folders(root / "sketch", ["n01440764"], ".JPEG"),
}
"""{dataset: write(root)}: a copy the dataset's reader opens (its default split) with every class named."""
