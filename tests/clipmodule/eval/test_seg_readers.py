"""Segmentation readers on tiny copies written in each release's layout: the label values each release stores
become the class indices (255 ignored) the metrics count."""

import numpy as np
import pytest
from PIL import Image

from clipmodule.eval.readers.base import MissingData
from clipmodule.eval.readers.seg_specs import open_segmentation

RAW = np.array([[0, 1, 2, 255], [3, 7, 26, 150]], dtype=np.uint8)  # raw label values as a release stores them


def _image(path, size=(4, 2)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (90, 120, 30)).save(path)


def _labels(path, values=RAW, palette=False):
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(values, mode="L")
    if palette:  # VOC's and Context's PNGs are palette images: the indices are the labels, not the colours
        image = image.convert("P")
        image.putpalette([channel for index in range(256) for channel in (index, 255 - index, 7)])
    image.save(path)


def _ids(path, ids):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(ids) + "\n")


def test_voc2012_release_layout(tmp_path):
    top = tmp_path / "VOCdevkit" / "VOC2012"
    _image(top / "JPEGImages" / "2007_000033.jpg")
    _labels(top / "SegmentationClass" / "2007_000033.png", np.array([[0, 1, 20, 255], [15, 15, 0, 0]], np.uint8),
            palette=True)
    _ids(top / "ImageSets" / "Segmentation" / "val.txt", ["2007_000033"])
    dataset = open_segmentation("voc2012", root=str(tmp_path))
    image, labels = dataset[0]
    assert len(dataset.classnames) == 21 and dataset.classnames[15] == "person" and dataset.background_index == 0
    assert labels.tolist() == [[0, 1, 20, 255], [15, 15, 0, 0]] and image.size == (4, 2)
    with pytest.raises(MissingData, match="split list"):
        open_segmentation("voc2012", root=str(tmp_path), split="train")


@pytest.mark.parametrize("classes", [59, 60])
def test_pascal_context_layout(tmp_path, classes):
    top = tmp_path / "VOCdevkit" / "VOC2010"
    _image(top / "JPEGImages" / "2008_000002.jpg")
    _labels(top / "SegmentationClassContext" / "2008_000002.png",
            np.array([[0, 1, 59, 0], [37, 37, 0, 1]], np.uint8))
    _ids(top / "ImageSets" / "SegmentationContext" / "val.txt", ["2008_000002"])
    dataset = open_segmentation(f"pascal_context_{classes}", root=str(tmp_path))
    labels = dataset[0][1].tolist()
    assert len(dataset.classnames) == classes
    if classes == 59:  # the background is not a class: ignored, the rest shift down by one
        assert labels == [[255, 0, 58, 255], [36, 36, 255, 0]] and dataset.classnames[36] == "person"
    else:
        assert labels == [[0, 1, 59, 0], [37, 37, 0, 1]] and dataset.classnames[37] == "person"


def test_ade20k_layout(tmp_path):
    top = tmp_path / "ADEChallengeData2016"
    _image(top / "images" / "validation" / "ADE_val_00000001.jpg")
    _labels(top / "annotations" / "validation" / "ADE_val_00000001.png")
    dataset = open_segmentation("ade20k", root=str(tmp_path))
    assert len(dataset.classnames) == 150 and dataset.classnames[12] == "person"
    assert dataset[0][1].tolist() == [[255, 0, 1, 255], [2, 6, 25, 149]]  # 0 ("other") ignored, v -> v - 1


def test_coco_stuff_release_and_converted_layouts(tmp_path):
    _image(tmp_path / "images" / "val2017" / "000000000139.jpg")
    _labels(tmp_path / "annotations" / "val2017" / "000000000139.png",
            np.array([[0, 11, 12, 255], [90, 91, 181, 24]], np.uint8))
    dataset = open_segmentation("coco_stuff", root=str(tmp_path))
    assert len(dataset.classnames) == 171
    # id 11 (street sign) and 90 (hair brush) name no class; 12 (stop sign) is class 11; stuff 91..181 -> 80..170
    assert dataset[0][1].tolist() == [[0, 255, 11, 255], [255, 80, 170, 23]]
    assert dataset.classnames[11] == "stop sign" and dataset.classnames[23] == "giraffe"  # COCO id 25
    assert dataset.classnames[80] == "banner"
    _labels(tmp_path / "annotations" / "val2017" / "000000000139_labelTrainIds.png",
            np.array([[0, 11, 12, 255], [90, 91, 170, 24]], np.uint8))
    assert open_segmentation("coco_stuff", root=str(tmp_path))[0][1].tolist() == [[0, 11, 12, 255], [90, 91, 170, 24]]


def test_cityscapes_release_layout(tmp_path):
    _image(tmp_path / "leftImg8bit" / "val" / "frankfurt" / "frankfurt_000000_000294_leftImg8bit.png")
    _labels(tmp_path / "gtFine" / "val" / "frankfurt" / "frankfurt_000000_000294_gtFine_labelIds.png",
            np.array([[7, 8, 0, 33], [26, 24, 1, 255]], np.uint8))
    dataset = open_segmentation("cityscapes", root=str(tmp_path))
    assert len(dataset.classnames) == 19 and dataset.classnames[13] == "car"
    assert dataset[0][1].tolist() == [[0, 1, 255, 18], [13, 11, 255, 255]]


def test_missing_copy_and_unknown_name_are_one_line(tmp_path):
    with pytest.raises(MissingData, match="no ADEChallengeData2016"):
        open_segmentation("ade20k", root=str(tmp_path / "absent"))
    from clipmodule.errors import ClipModuleError

    with pytest.raises(ClipModuleError, match="not a segmentation dataset"):
        open_segmentation("voc2007", root=str(tmp_path))
    with pytest.raises(ClipModuleError, match="give the folder"):
        open_segmentation("ade20k")
