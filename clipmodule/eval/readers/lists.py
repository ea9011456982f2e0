"""Datasets whose splits and labels are listed in annotation files beside the images.

    food101        food-101/meta/{train,test}.json ({class: ["class/id", …]}) + images/<class>/<id>.jpg
    flowers        flowers-102/jpg/image_NNNNN.jpg + imagelabels.mat (1-based) + setid.mat (trnid/valid/tstid)
    dtd            dtd/dtd/labels/{train,val,test}1.txt ("class/file.jpg") + dtd/dtd/images/
    pets           oxford-iiit-pet/annotations/{trainval,test}.txt ("Breed_Name_12 <class id> …") + images/
    fgvc_aircraft  fgvc-aircraft-2013b/data/variants.txt + images_variant_<split>.txt + images/<id>.jpg
    cars           stanford_cars/devkit/{cars_meta,cars_train_annos}.mat, cars_test_annos_withlabels.mat,
                   cars_{train,test}/
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from clipmodule.errors import ClipModuleError
from clipmodule.eval.readers.base import check_class_list, class_folders, loadmat, read_text_lines, register
from clipmodule.eval.readers.items import BenchmarkDataset


@register("food101", splits=("train", "test"), bases=("food-101",),
          expected=lambda split: [f"meta/{split}.json", "images"],
          layout="food-101/meta/{train,test}.json + images/<class>/<id>.jpg")
def open_food101(folder: Path, split: str) -> BenchmarkDataset:
    listing = folder / "meta" / f"{split}.json"
    try:
        metadata = json.loads(listing.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise ClipModuleError(f"{listing}: unreadable JSON ({str(error).splitlines()[0][:120]})") from None
    if not isinstance(metadata, dict) or not all(isinstance(images, list) for images in metadata.values()):
        raise ClipModuleError(f"{listing}: expected {{class: [\"class/id\", …]}}")
    classes = sorted(metadata)
    index = {cls: label for label, cls in enumerate(classes)}
    items = [(folder / "images" / f"{image}.jpg", index[cls]) for cls in metadata  # the file's order, as torchvision
             for image in metadata[cls]]
    names = [cls.replace("_", " ") for cls in classes]
    return BenchmarkDataset("food101", split, "zeroshot_classification", items, names, folder)


FLOWERS_SPLITS = {"train": "trnid", "val": "valid", "test": "tstid"}
FLOWERS_CLASSES = 102


def _integers(value) -> np.ndarray | None:
    """A .mat entry as a flat int64 array, or None when it is absent or not numbers (a damaged file)."""
    array = np.atleast_1d(np.asarray(value)) if value is not None else None
    if array is None or not np.issubdtype(array.dtype, np.number):
        return None
    return array.reshape(-1).astype(np.int64)


@register("flowers", splits=("train", "val", "test"), bases=("flowers-102",), aliases=("flowers102",),
          expected=lambda split: ["jpg", "imagelabels.mat", "setid.mat"],
          layout="flowers-102/jpg/image_NNNNN.jpg + imagelabels.mat + setid.mat")
def open_flowers(folder: Path, split: str) -> BenchmarkDataset:
    labels = _integers(loadmat(folder / "imagelabels.mat").get("labels"))
    ids = _integers(loadmat(folder / "setid.mat").get(FLOWERS_SPLITS[split]))
    if ids is None or labels is None or not len(labels) or not len(ids):
        raise ClipModuleError(f"{folder}: imagelabels.mat needs integer 'labels' and setid.mat integer "
                              f"'{FLOWERS_SPLITS[split]}'")
    if ids.min() < 1 or ids.max() > len(labels):
        raise ClipModuleError(f"{folder}: setid.mat names image {ids.max()} but imagelabels.mat has {len(labels)}")
    outside = labels[(labels < 1) | (labels > FLOWERS_CLASSES)]
    if outside.size:
        raise ClipModuleError(f"{folder / 'imagelabels.mat'}: label {outside[0]} is not a class 1..{FLOWERS_CLASSES} "
                              "(a damaged file)")
    items = [(folder / "jpg" / f"image_{image:05d}.jpg", int(labels[image - 1]) - 1) for image in ids]
    # the copy names its 102 classes by number only (1-based on disk, 0-based labels here)
    names = [str(label) for label in range(1, FLOWERS_CLASSES + 1)]
    return BenchmarkDataset("flowers", split, "zeroshot_classification", items, names, folder)


@register("dtd", splits=("train", "val", "test"), bases=("dtd/dtd", "dtd"),
          expected=lambda split: [f"labels/{split}1.txt", "images"],
          layout="dtd/dtd/labels/{train,val,test}1.txt + dtd/dtd/images/<class>/*.jpg (partition 1)")
def open_dtd(folder: Path, split: str) -> BenchmarkDataset:
    entries = read_text_lines(folder / "labels" / f"{split}1.txt")
    classes = class_folders(folder / "images")  # all 47, whichever a split file happens to list
    index = {cls: label for label, cls in enumerate(classes)}
    unknown = next((entry for entry in entries if entry.split("/", 1)[0] not in index), None)
    if unknown is not None:
        raise ClipModuleError(f"{folder / 'labels' / f'{split}1.txt'}: {unknown} is in no folder of images/")
    items = [(folder / "images" / entry, index[entry.split("/", 1)[0]]) for entry in entries]
    return BenchmarkDataset("dtd", split, "zeroshot_classification", items, classes, folder)


def _pet_lines(listing: Path) -> list[tuple[str, int]]:
    """(image id, 0-based class) of an annotation list; '#' lines are comments (list.txt has some)."""
    out = []
    for line in read_text_lines(listing):
        parts = line.split()
        if line.startswith("#"):
            continue
        if len(parts) < 2 or not parts[1].isdigit():
            raise ClipModuleError(f"{listing}: line {line[:60]!r} is not '<image id> <class id> …'")
        out.append((parts[0], int(parts[1]) - 1))
    return out


@register("pets", splits=("trainval", "test"), bases=("oxford-iiit-pet",), aliases=("oxford_pets",),
          expected=lambda split: [f"annotations/{split}.txt", "images"],
          layout="oxford-iiit-pet/annotations/{trainval,test}.txt + images/<Breed_Name>_<n>.jpg")
def open_pets(folder: Path, split: str) -> BenchmarkDataset:
    pairs = _pet_lines(folder / "annotations" / f"{split}.txt")
    items = [(folder / "images" / f"{image}.jpg", label) for image, label in pairs]
    breeds: dict[int, str] = {}
    for listing in ("trainval.txt", "test.txt"):  # names from both lists, so both splits name classes alike
        if (folder / "annotations" / listing).is_file():
            for image, label in _pet_lines(folder / "annotations" / listing):
                breeds.setdefault(label, image.rsplit("_", 1)[0])
    # torchvision's names: the image-id prefix, words title-cased ("american_bulldog" -> "American Bulldog")
    names = [" ".join(word.title() for word in breeds.get(label, str(label + 1)).split("_"))
             for label in range(max(breeds, default=-1) + 1)]
    return BenchmarkDataset("pets", split, "zeroshot_classification", items, names, folder)


@register("fgvc_aircraft", splits=("train", "val", "trainval", "test"), bases=("fgvc-aircraft-2013b/data",),
          expected=lambda split: ["variants.txt", f"images_variant_{split}.txt", "images"],
          layout="fgvc-aircraft-2013b/data/variants.txt + images_variant_<split>.txt + images/<id>.jpg")
def open_fgvc_aircraft(folder: Path, split: str) -> BenchmarkDataset:
    classes = read_text_lines(folder / "variants.txt")
    check_class_list(folder / "variants.txt", classes)
    used = {line.partition(" ")[2] for listing in sorted(folder.glob("images_variant_*.txt"))
            for line in read_text_lines(listing)}
    unused = [variant for variant in classes if variant not in used]
    if unused:  # a stray line: a class no image has, which zero-shot would still predict
        raise ClipModuleError(f"{folder / 'variants.txt'}: variant {unused[0]!r} is in none of the "
                              "images_variant_*.txt lists (a stray or damaged line)")
    index = {cls: label for label, cls in enumerate(classes)}
    listing = folder / f"images_variant_{split}.txt"
    items = []
    for line in read_text_lines(listing):
        image, _, variant = line.partition(" ")
        if variant not in index:
            raise ClipModuleError(f"{listing}: variant {variant!r} of image {image} is not in variants.txt")
        items.append((folder / "images" / f"{image}.jpg", index[variant]))
    return BenchmarkDataset("fgvc_aircraft", split, "zeroshot_classification", items, classes, folder)


def _cars_expected(split: str) -> list[str]:
    annotations = "devkit/cars_train_annos.mat" if split == "train" else "cars_test_annos_withlabels.mat"
    return ["devkit/cars_meta.mat", annotations, f"cars_{split}"]


@register("cars", splits=("train", "test"), bases=("stanford_cars",), aliases=("stanford_cars",),
          expected=_cars_expected,
          layout="stanford_cars/devkit/{cars_meta,cars_train_annos}.mat, cars_test_annos_withlabels.mat, "
                 "cars_{train,test}/")
def open_cars(folder: Path, split: str) -> BenchmarkDataset:
    annotations_file = folder / _cars_expected(split)[1]
    annotations = np.atleast_1d(loadmat(annotations_file).get("annotations", np.array([])))
    names = [str(name) for name in np.atleast_1d(loadmat(folder / "devkit" / "cars_meta.mat").get("class_names", []))]
    check_class_list(folder / "devkit" / "cars_meta.mat", names)
    fields = annotations.dtype.names or ()
    if "fname" not in fields or "class" not in fields:
        raise ClipModuleError(f"{annotations_file}: expected an 'annotations' struct with fname and class")
    try:
        items = [(folder / f"cars_{split}" / str(row["fname"]), int(row["class"]) - 1) for row in annotations]
    except (TypeError, ValueError):
        raise ClipModuleError(f"{annotations_file}: an annotation's class is not a number (a damaged file)") from None
    return BenchmarkDataset("cars", split, "zeroshot_classification", items, names, folder)
