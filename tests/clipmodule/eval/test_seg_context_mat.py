"""Pascal Context's original release (VOC2010 JPEGs, trainval/<id>.mat LabelMaps over labels.txt's 459 classes, the
site's 59_labels.txt) read on a tiny copy in that layout; its labels equal those of mmsegmentation's converted PNGs
of the same maps (the 59 ids in ascending order -> 1..59, everything else 0) read through the PNG layout."""

import numpy as np
import pytest
from PIL import Image
from scipy.io import savemat

from clipmodule.data.name_files import ASSETS
from clipmodule.errors import ClipModuleError
from clipmodule.eval.readers.base import MissingData
from clipmodule.eval.readers.pascal_context_mat import CONTEXT_59_IDS
from clipmodule.eval.readers.seg_specs import open_segmentation

NAMES = (ASSETS / "segmentation" / "pascal_context_59.txt").read_text().split()
# Release ids: 0 unlabelled, 1 accordion (not one of the 59), 2 aeroplane, 9 bag, 284 person, 100 another, 458 the last
LABEL_MAP = np.array([[0, 2, 284, 1], [458, 9, 100, 284]], dtype=np.uint16)
IDS = ["2008_000002", "2008_000003"]


def _release(root, with_label_files=True):
    top = root / "VOCdevkit" / "VOC2010"
    (top / "JPEGImages").mkdir(parents=True)
    (top / "trainval").mkdir()
    for number, key in enumerate(IDS):
        Image.new("RGB", (4, 2), (90, 120, 30)).save(top / "JPEGImages" / f"{key}.jpg")
        savemat(top / "trainval" / f"{key}.mat", {"LabelMap": np.roll(LABEL_MAP, number, axis=1)})
    (top / "ImageSets" / "Main").mkdir(parents=True)
    (top / "ImageSets" / "Main" / "val.txt").write_text("\n".join(IDS) + "\n")  # VOC2010's own split list
    if with_label_files:
        names = dict(zip(CONTEXT_59_IDS, NAMES, strict=True))
        (top / "labels.txt").write_text("".join(f"{key}: {names.get(key, f'class{key}')}\n" for key in range(1, 460)))
        (top / "59_labels.txt").write_text("".join(f"{key}: {names[key]}\n" for key in CONTEXT_59_IDS))
    return top


def _mmseg_png(label_map):
    """mmsegmentation's conversion of a release map: the 59 ids (with 0) sorted, a pixel's index among them."""
    keys = np.array([0, *CONTEXT_59_IDS])
    return np.where(np.isin(label_map, keys), np.searchsorted(keys, label_map), 0).astype(np.uint8)


@pytest.mark.parametrize("label_files", [True, False])
def test_release_mat_labels_become_the_59_and_60_classes(tmp_path, label_files):
    _release(tmp_path, with_label_files=label_files)
    context_59 = open_segmentation("pascal_context_59", root=str(tmp_path))
    context_60 = open_segmentation("pascal_context_60", root=str(tmp_path))
    assert len(context_59) == 2 and len(context_59.classnames) == 59 and context_60.classnames[37] == "person"
    assert context_59[0][1].tolist() == [[255, 0, 36, 255], [58, 1, 255, 36]]
    assert context_60[0][1].tolist() == [[0, 1, 37, 0], [59, 2, 0, 37]]
    assert context_60.background_index == 0 and context_59.background_index is None
    image, _ = context_59[1]
    assert image.size == (4, 2)


@pytest.mark.parametrize("classes", [59, 60])
def test_release_equals_mmsegmentations_converted_pngs(tmp_path, classes):
    top = _release(tmp_path / "release")
    converted = tmp_path / "converted" / "VOCdevkit" / "VOC2010"
    (converted / "SegmentationClassContext").mkdir(parents=True)
    (converted / "ImageSets" / "SegmentationContext").mkdir(parents=True)
    (converted / "JPEGImages").symlink_to(top / "JPEGImages")
    for number, key in enumerate(IDS):
        png = _mmseg_png(np.roll(LABEL_MAP, number, axis=1))
        Image.fromarray(png, mode="L").save(converted / "SegmentationClassContext" / f"{key}.png")
    (converted / "ImageSets" / "SegmentationContext" / "val.txt").write_text("\n".join(IDS))
    ours = open_segmentation(f"pascal_context_{classes}", root=str(tmp_path / "release"))
    theirs = open_segmentation(f"pascal_context_{classes}", root=str(tmp_path / "converted"))
    assert ours.classnames == theirs.classnames
    for index in range(len(IDS)):
        assert np.array_equal(ours[index][1], theirs[index][1])


def test_bad_release_files_are_one_line_errors(tmp_path):
    top = _release(tmp_path)
    subset = (top / "59_labels.txt").read_text().replace("284: person", "284: people")
    (top / "59_labels.txt").write_text(subset)
    with pytest.raises(ClipModuleError, match="id 284 is 'people' but .*labels.txt names it 'person'") as info:
        open_segmentation("pascal_context_59", root=str(tmp_path))
    assert "\n" not in str(info.value)
    (top / "59_labels.txt").unlink()
    (top / "trainval" / f"{IDS[1]}.mat").write_bytes(b"MATLAB 7.3 MAT-file, not really")
    dataset = open_segmentation("pascal_context_59", root=str(tmp_path))
    with pytest.raises(ClipModuleError, match=f"{IDS[1]}.mat: not a readable MATLAB file") as info:
        dataset[1]
    assert "\n" not in str(info.value)
    savemat(top / "trainval" / f"{IDS[1]}.mat", {"Other": np.zeros((2, 4))})
    with pytest.raises(ClipModuleError, match="no 2-D integer LabelMap"):
        dataset[1]
    (top / "trainval" / f"{IDS[1]}.mat").unlink()
    with pytest.raises(MissingData, match="1 files of the val split are missing"):
        open_segmentation("pascal_context_59", root=str(tmp_path))
    with pytest.raises(MissingData, match="no split list"):
        open_segmentation("pascal_context_59", root=str(tmp_path), split="test")
