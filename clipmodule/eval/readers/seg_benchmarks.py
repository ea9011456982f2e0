"""Segmentation benchmarks from local copies in their released layouts (`root` is the folder given; the dataset's
own top folder may be it or sit inside it). Label maps become class indices with 255 ignored:

    voc2012            VOCdevkit/VOC2012/{JPEGImages/<id>.jpg, SegmentationClass/<id>.png,
                       ImageSets/Segmentation/<split>.txt}; 21 classes, 0 = background, 255 = object borders
    pascal_context_59  VOCdevkit/VOC2010/{JPEGImages, SegmentationClassContext/<id>.png,
    pascal_context_60  ImageSets/SegmentationContext/<split>.txt}: the label PNGs mmsegmentation's converter
                       writes from the Detail API's trainval_merged.json (0 = background, 1..59 the classes);
                       the 59-class set ignores the background, the 60-class set keeps it as class 0
    pascal_context_59_mat, pascal_context_60_mat
                       the original release's VOC2010/trainval/<id>.mat LabelMaps (`pascal_context_mat`): their
                       masks differ from trainval_merged.json's, so these labels are not the benchmark's and
                       their scores are not comparable with published numbers
    ade20k             ADEChallengeData2016/{images,annotations}/<split>/<name>.{jpg,png}; 0 ("other") ignored,
                       1..150 -> 0..149; splits `validation` (default; `val` too) and `training`
    coco_stuff         {images,annotations}/<split>2017/<name>.{jpg,png} (the stuffthingmaps release: COCO ids
                       minus one, 0..181, 255 unlabelled) -> the 171 classes in use; a `<name>_labelTrainIds.png`
                       beside it (mmsegmentation's conversion) is read as already mapped
    cityscapes         leftImg8bit/<split>/<city>/<name>_leftImg8bit.png, gtFine/<split>/<city>/<name>_gtFine_
                       labelIds.png -> the 19 train ids (the others ignored)

The default split is each set's validation split.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clipmodule.data.name_files import ASSETS
from clipmodule.eval.readers import pascal_context_mat as context_mat
from clipmodule.eval.readers.base import MissingData
from clipmodule.eval.readers.segmentation import IGNORE_INDEX, SegmentationSet

NAMES = ASSETS / "segmentation"
# COCO's 91 thing ids hold 80 categories: these 0-based ids (COCO id - 1) name none (street sign, hat, shoe, ...).
COCO_UNUSED = (11, 25, 28, 29, 44, 65, 67, 68, 70, 82, 90)
# Cityscapes' labelIds of its 19 evaluated classes, in train-id order.
CITYSCAPES_IDS = (7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33)


def _lookup(pairs: dict[int, int]) -> Callable[[np.ndarray], np.ndarray]:
    """A decoder mapping raw label values through `pairs`; every other value becomes 255."""
    table = np.full(256, IGNORE_INDEX, dtype=np.int64)
    for raw, label in pairs.items():
        table[raw] = label
    return lambda labels: table[np.clip(labels, 0, 255)]


def _names(file: str) -> list[str]:
    return [line.strip() for line in (NAMES / file).read_text(encoding="utf-8").splitlines() if line.strip()]


def _find(root: Path, *candidates: str) -> Path:
    """The first of `root/candidate` that is a folder (the dataset's top folder may be root itself)."""
    for candidate in candidates:
        if (root / candidate).is_dir():
            return root / candidate
    raise MissingData(f"{root}: no {' or '.join(candidates)} folder here")


def _id_list(folder: Path, images: str, labels: str, ids_file: Path, name: str) -> list[tuple[str, str]]:
    if not ids_file.is_file():
        raise MissingData(f"{name}: no split list {ids_file}")
    ids = [line.strip() for line in ids_file.read_text(encoding="utf-8").splitlines() if line.strip()]
    items = [(str(folder / images / f"{i}.jpg"), str(folder / labels / f"{i}.png")) for i in ids]
    missing = [path for pair in items for path in pair if not Path(path).is_file()]
    if missing:
        raise MissingData(f"{name}: {len(missing)} files of the {ids_file.stem} split are missing (e.g. {missing[0]})")
    return items


def _voc(root: Path, split: str) -> SegmentationSet:
    folder = _find(root, "VOCdevkit/VOC2012", "VOC2012", ".")
    items = _id_list(folder, "JPEGImages", "SegmentationClass", folder / "ImageSets/Segmentation" / f"{split}.txt",
                     "voc2012")
    return SegmentationSet("voc2012", _names("voc2012.txt"), items, background_index=0, split=split)


MAT_LABELS = ("Pascal Context's original .mat release, not the benchmark's labels (mmsegmentation's PNGs come from "
              "the Detail API's trainval_merged.json): not comparable with published numbers")


def _context(root: Path, split: str, classes: int) -> SegmentationSet:
    folder = _find(root, "VOCdevkit/VOC2010", "VOC2010", ".")
    name = f"pascal_context_{classes}"
    if not (folder / "SegmentationClassContext").is_dir() and context_mat.find_mat_folder(root, folder) is not None:
        raise MissingData(f"{name}: {folder} holds the original .mat release, not mmsegmentation's "
                          f"SegmentationClassContext PNGs (the benchmark's labels); read it as {name}_mat "
                          "(its labels differ; not comparable with published numbers)")
    items = _id_list(folder, "JPEGImages", "SegmentationClassContext",
                     folder / "ImageSets/SegmentationContext" / f"{split}.txt", name)
    names = _names("pascal_context_59.txt")
    if classes == 59:
        return SegmentationSet(name, names, items, decode=_lookup({v: v - 1 for v in range(1, 60)}), split=split)
    return SegmentationSet(name, ["background", *names], items, background_index=0,
                           decode=_lookup({v: v for v in range(60)}), split=split)


def _context_mat(root: Path, split: str, classes: int) -> SegmentationSet:
    """Pascal Context's original release read from its .mat LabelMaps (`labels_source`: not the benchmark's)."""
    folder = _find(root, "VOCdevkit/VOC2010", "VOC2010", ".")
    name = f"pascal_context_{classes}_mat"
    mat_folder = context_mat.find_mat_folder(root, folder)
    if mat_folder is None:
        raise MissingData(f"{name}: no trainval/ folder of .mat files in {folder} or {root}")
    names = _names("pascal_context_59.txt")
    return SegmentationSet(name, names if classes == 59 else ["background", *names],
                           context_mat.mat_items(folder, mat_folder, split, name),
                           background_index=None if classes == 59 else 0,
                           decode=context_mat.context_decoder(context_mat.context_59_ids(mat_folder, names), classes),
                           split=split, read_labels=context_mat.read_label_map, labels_source=MAT_LABELS)


def _pairs(images: Path, labels: Path, image_suffix: str, label_for: Callable[[Path], Path | None],
           name: str) -> list[tuple[str, str]]:
    if not images.is_dir():
        raise MissingData(f"{name}: no image folder {images}")
    files = sorted(path for path in images.rglob(f"*{image_suffix}"))
    if not files:
        raise MissingData(f"{name}: no *{image_suffix} images under {images}")
    items = []
    for path in files:
        label = label_for(path)
        if label is None:
            raise MissingData(f"{name}: no label map for {path} under {labels}")
        items.append((str(path), str(label)))
    return items


def _ade(root: Path, split: str) -> SegmentationSet:
    folder = _find(root, "ADEChallengeData2016", ".")
    split = {"val": "validation", "train": "training"}.get(split, split)
    labels = folder / "annotations" / split

    def label_for(path: Path) -> Path | None:
        label = labels / f"{path.stem}.png"
        return label if label.is_file() else None

    items = _pairs(folder / "images" / split, labels, ".jpg", label_for, "ade20k")
    return SegmentationSet("ade20k", _names("ade20k.txt"), items, decode=_lookup({v: v - 1 for v in range(1, 151)}),
                           split=split)


def _coco_stuff(root: Path, split: str) -> SegmentationSet:
    folder = _find(root, "coco_stuff164k", "cocostuff", ".")
    split = {"val": "val2017", "train": "train2017"}.get(split, split)
    labels = folder / "annotations" / split
    used = [raw for raw in range(182) if raw not in COCO_UNUSED]
    raw_decode = _lookup({raw: index for index, raw in enumerate(used)})
    converted = {"yes": False}

    def label_for(path: Path) -> Path | None:
        for candidate, is_converted in ((labels / f"{path.stem}_labelTrainIds.png", True),
                                        (labels / f"{path.stem}.png", False)):
            if candidate.is_file():
                converted["yes"] = is_converted
                return candidate
        return None

    items = _pairs(folder / "images" / split, labels, ".jpg", label_for, "coco_stuff")
    decode = _lookup({v: v for v in range(171)}) if converted["yes"] else raw_decode
    return SegmentationSet("coco_stuff", _names("coco_stuff.txt"), items, decode=decode, split=split)


def _cityscapes(root: Path, split: str) -> SegmentationSet:
    folder = _find(root, "cityscapes", ".")
    labels = folder / "gtFine" / split

    def label_for(path: Path) -> Path | None:
        stem = path.name.removesuffix("_leftImg8bit.png")
        label = labels / path.parent.name / f"{stem}_gtFine_labelIds.png"
        return label if label.is_file() else None

    items = _pairs(folder / "leftImg8bit" / split, labels, "_leftImg8bit.png", label_for, "cityscapes")
    decode = _lookup({raw: index for index, raw in enumerate(CITYSCAPES_IDS)})
    return SegmentationSet("cityscapes", _names("cityscapes.txt"), items, decode=decode, split=split)


@dataclass(frozen=True)
class SegmentationReader:
    open: Callable[[Path, str], SegmentationSet]
    default_split: str


SEGMENTATION_READERS = {
    "voc2012": SegmentationReader(_voc, "val"),
    "pascal_context_59": SegmentationReader(lambda root, split: _context(root, split, 59), "val"),
    "pascal_context_60": SegmentationReader(lambda root, split: _context(root, split, 60), "val"),
    "pascal_context_59_mat": SegmentationReader(lambda root, split: _context_mat(root, split, 59), "val"),
    "pascal_context_60_mat": SegmentationReader(lambda root, split: _context_mat(root, split, 60), "val"),
    "ade20k": SegmentationReader(_ade, "validation"),
    "coco_stuff": SegmentationReader(_coco_stuff, "val2017"),
    "cityscapes": SegmentationReader(_cityscapes, "val"),
}


def open_benchmark_segmentation(name: str, root: str, split: str | None = None) -> SegmentationSet:
    """The named benchmark's split (default: its validation split) from the copy at `root`."""
    entry = SEGMENTATION_READERS[name]
    return entry.open(Path(root), split or entry.default_split)
