"""PASCAL VOC 2007 as CLIP_benchmark evaluates it.

    voc2007_multilabel  every image with the set of classes of its objects (difficult ones included);
                        the metric is mean average precision over the 20 classes (`eval.tasks.multilabel`)
    voc2007             one crop per object box, labelled with the object's class (single-label top-1)

Layout: VOCdevkit/VOC2007/{JPEGImages/<id>.jpg, Annotations/<id>.xml, ImageSets/Main/<split>.txt} (or the
per-class aeroplane_<split>.txt, whose first column lists the same ids); splits train, val, trainval, test.
"""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree
from pathlib import Path

from clipmodule.errors import ClipModuleError
from clipmodule.eval.readers.base import read_text_lines, register
from clipmodule.eval.readers.images import CropImage
from clipmodule.eval.readers.items import BenchmarkDataset

VOC_CLASSES = ["aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
               "tvmonitor"]
VOC_SPLITS = ("train", "val", "trainval", "test")
VOC_BASES = ("VOCdevkit/VOC2007", "VOC2007")


def _expected(split: str) -> list:
    return [(f"ImageSets/Main/{split}.txt", f"ImageSets/Main/aeroplane_{split}.txt"), "Annotations", "JPEGImages"]


def _image_ids(folder: Path, split: str) -> list[str]:
    listing = folder / "ImageSets" / "Main" / f"{split}.txt"
    if not listing.is_file():
        listing = folder / "ImageSets" / "Main" / f"aeroplane_{split}.txt"
    return [line.split()[0] for line in read_text_lines(listing)]


def _objects(folder: Path, image_id: str) -> list[tuple[int, tuple[int, int, int, int]]]:
    """(class index, box) of every object annotated in the image."""
    path = folder / "Annotations" / f"{image_id}.xml"
    try:
        tree = ElementTree.parse(path)
    except (OSError, ElementTree.ParseError) as error:
        raise ClipModuleError(f"{path}: unreadable annotation ({error})") from None
    objects = []
    for element in tree.getroot().iter("object"):
        name, box = element.findtext("name", "").strip(), element.find("bndbox")
        if name not in VOC_CLASSES or box is None:
            raise ClipModuleError(f"{path}: object {name!r} is not a VOC class or has no bndbox")
        try:
            coords = tuple(int(float(box.findtext(key, ""))) for key in ("xmin", "ymin", "xmax", "ymax"))
        except ValueError:
            raise ClipModuleError(f"{path}: object {name!r} has a non-numeric bndbox") from None
        objects.append((VOC_CLASSES.index(name), coords))
    return objects


@register("voc2007_multilabel", splits=VOC_SPLITS, bases=VOC_BASES, expected=_expected, metric="mean average precision",
          layout="VOCdevkit/VOC2007/{JPEGImages,Annotations,ImageSets/Main} (multi-label, every image)")
def open_voc2007_multilabel(folder: Path, split: str) -> BenchmarkDataset:
    items = []
    for image_id in _image_ids(folder, split):
        classes = sorted({label for label, _ in _objects(folder, image_id)})
        items.append((folder / "JPEGImages" / f"{image_id}.jpg", classes))
    return BenchmarkDataset("voc2007_multilabel", split, "multilabel", items, list(VOC_CLASSES), folder)


@register("voc2007", splits=VOC_SPLITS, bases=VOC_BASES, expected=_expected,
          layout="VOCdevkit/VOC2007/… (one crop per object box, single-label)")
def open_voc2007(folder: Path, split: str) -> BenchmarkDataset:
    items = [(CropImage(folder / "JPEGImages" / f"{image_id}.jpg", box), label)
             for image_id in _image_ids(folder, split) for label, box in _objects(folder, image_id)]
    return BenchmarkDataset("voc2007", split, "zeroshot_classification", items, list(VOC_CLASSES), folder)
