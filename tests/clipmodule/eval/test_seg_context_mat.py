"""Pascal Context's original release (VOC2010 JPEGs, trainval/<id>.mat LabelMaps over labels.txt's 459 classes, the
site's 59_labels.txt) read on a tiny copy in that layout as `pascal_context_59_mat` / `_60_mat`: not the benchmark's
labels (mmsegmentation's PNGs come from the Detail API's trainval_merged.json), so `pascal_context_59` refuses it."""

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


# mmsegmentation's 59 classes as release ids: the `_mapping` literal of open-mmlab/mmsegmentation
# tools/convert_datasets/pascal_context.py (commit 159db2f8), sorted there, 0 (background) dropped here.
MMSEG_MAPPING = [0, 2, 259, 260, 415, 324, 9, 258, 144, 18, 19, 22, 23, 397, 25, 284, 158, 159, 416, 33, 162, 420, 454,
                 295, 296, 427, 44, 45, 46, 308, 59, 440, 445, 31, 232, 65, 354, 424, 68, 326, 72, 458, 34, 207, 80,
                 355, 85, 347, 220, 349, 360, 98, 187, 104, 105, 366, 189, 368, 113, 115]


def test_the_59_ids_are_mmsegmentations_mapping_in_its_order():
    assert list(CONTEXT_59_IDS) == sorted(MMSEG_MAPPING)[1:]


@pytest.mark.parametrize("label_files", [True, False])
def test_release_mat_labels_become_the_59_and_60_classes(tmp_path, label_files):
    _release(tmp_path, with_label_files=label_files)
    context_59 = open_segmentation("pascal_context_59_mat", root=str(tmp_path))
    context_60 = open_segmentation("pascal_context_60_mat", root=str(tmp_path))
    assert len(context_59) == 2 and len(context_59.classnames) == 59 and context_60.classnames[37] == "person"
    assert context_59[0][1].tolist() == [[255, 0, 36, 255], [58, 1, 255, 36]]
    assert context_60[0][1].tolist() == [[0, 1, 37, 0], [59, 2, 0, 37]]
    assert context_60.background_index == 0 and context_59.background_index is None
    image, _ = context_59[1]
    assert image.size == (4, 2)


@pytest.mark.parametrize("classes", [59, 60])
def test_the_benchmark_names_refuse_the_mat_release(tmp_path, classes):
    _release(tmp_path)
    with pytest.raises(MissingData, match=f"read it as pascal_context_{classes}_mat") as info:
        open_segmentation(f"pascal_context_{classes}", root=str(tmp_path))
    assert "\n" not in str(info.value) and "not comparable with published numbers" in str(info.value)
    assert "original .mat release" in open_segmentation(f"pascal_context_{classes}_mat",
                                                        root=str(tmp_path)).labels_source


def test_a_mat_record_says_where_its_labels_come_from(tmp_path):
    from types import SimpleNamespace

    import torch

    from clipmodule.eval.options import TaskSpec
    from clipmodule.eval.tasks.segmentation import _open, _run
    from clipmodule.models import create_model

    _release(tmp_path)
    spec = TaskSpec(task="segmentation", dataset="pascal_context_60_mat", root=str(tmp_path), templates="simple")
    context = SimpleNamespace(loader=SimpleNamespace(torch_device=lambda: torch.device("cpu")), progress=None)
    torch.manual_seed(0)
    metrics = _run(create_model("tiny-vit").eval(), spec, _open(spec, None), context)
    assert "not comparable with published numbers" in metrics["prompts"]["labels_source"]


def test_bad_release_files_are_one_line_errors(tmp_path):
    top = _release(tmp_path)
    subset = (top / "59_labels.txt").read_text().replace("284: person", "284: people")
    (top / "59_labels.txt").write_text(subset)
    with pytest.raises(ClipModuleError, match="id 284 is 'people' but .*labels.txt names it 'person'") as info:
        open_segmentation("pascal_context_59_mat", root=str(tmp_path))
    assert "\n" not in str(info.value)
    (top / "59_labels.txt").unlink()
    (top / "trainval" / f"{IDS[1]}.mat").write_bytes(b"MATLAB 7.3 MAT-file, not really")
    dataset = open_segmentation("pascal_context_59_mat", root=str(tmp_path))
    with pytest.raises(ClipModuleError, match=f"{IDS[1]}.mat: not a readable MATLAB file") as info:
        dataset[1]
    assert "\n" not in str(info.value)
    savemat(top / "trainval" / f"{IDS[1]}.mat", {"Other": np.zeros((2, 4))})
    with pytest.raises(ClipModuleError, match="no 2-D integer LabelMap"):
        dataset[1]
    (top / "trainval" / f"{IDS[1]}.mat").unlink()
    with pytest.raises(MissingData, match="1 files of the val split are missing"):
        open_segmentation("pascal_context_59_mat", root=str(tmp_path))
    with pytest.raises(MissingData, match="no split list"):
        open_segmentation("pascal_context_59_mat", root=str(tmp_path), split="test")


def test_59_labels_names_must_be_the_59_classes_in_id_order(tmp_path):
    top = _release(tmp_path)
    for file in ("labels.txt", "59_labels.txt"):  # agreeing with labels.txt is not enough
        (top / file).write_text((top / file).read_text().replace("284: person", "284: people"))
    with pytest.raises(ClipModuleError, match=r"59_labels.txt: id 284 is 'people' but class 36 of the 59 "
                                              r"\(pascal_context_59.txt, in id order\) is 'person'") as info:
        open_segmentation("pascal_context_59_mat", root=str(tmp_path))
    assert "\n" not in str(info.value)
    (top / "labels.txt").unlink()
    swapped = (top / "59_labels.txt").read_text().replace("2: aeroplane", "2: bag").replace("9: bag", "9: aeroplane")
    (top / "59_labels.txt").write_text(swapped)
    with pytest.raises(ClipModuleError, match="id 2 is 'bag' but class 0 of the 59 .* is 'aeroplane'"):
        open_segmentation("pascal_context_60_mat", root=str(tmp_path))
