"""VOC2007 from a tiny VOCdevkit copy (multi-label and per-object crops); its mAP against scikit-learn's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from clipmodule.eval.readers import open_dataset
from clipmodule.eval.readers.voc import VOC_CLASSES
from clipmodule.eval.tasks.multilabel import average_precision_per_class, mean_average_precision
from tests.clipmodule.eval.readers.copies import decode, save

# image id: [(class, box)], per split
IMAGES = {"trainval": {"000005": [("chair", (2, 2, 10, 12)), ("chair", (4, 1, 15, 8))],
                       "000007": [("car", (1, 1, 15, 15))]},
          "test": {"000001": [("dog", (1, 3, 12, 14)), ("person", (0, 0, 6, 15))],
                   "000002": [("train", (3, 3, 13, 13))], "000004": [("car", (2, 2, 9, 9))]}}


def _annotation(image_id: str, objects: list) -> str:
    body = "".join(f"<object><name>{name}</name><pose>Left</pose><truncated>1</truncated><difficult>0</difficult>"
                   f"<bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>"
                   for name, (x1, y1, x2, y2) in objects)
    return (f"<annotation><folder>VOC2007</folder><filename>{image_id}.jpg</filename>"
            f"<size><width>16</width><height>16</height><depth>3</depth></size>{body}</annotation>")


def write_voc(root: Path, per_class_lists: bool) -> Path:
    base = root / "VOCdevkit" / "VOC2007"
    (base / "Annotations").mkdir(parents=True)
    (base / "ImageSets" / "Main").mkdir(parents=True)
    for split, images in IMAGES.items():
        for number, (image_id, objects) in enumerate(images.items()):
            save(base / "JPEGImages" / f"{image_id}.jpg", number, "test")
            (base / "Annotations" / f"{image_id}.xml").write_text(_annotation(image_id, objects))
        if per_class_lists:  # aeroplane_<split>.txt: "<id> -1" lines, as the devkit ships them
            (base / "ImageSets" / "Main" / f"aeroplane_{split}.txt").write_text("".join(f"{i} -1\n" for i in images))
        else:
            (base / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(f"{i}\n" for i in images))
    return base


@pytest.mark.parametrize("per_class_lists", [False, True])
def test_voc2007_multilabel_targets(tmp_path, per_class_lists):
    write_voc(tmp_path, per_class_lists)
    dataset = open_dataset("voc2007_multilabel", tmp_path, "test")
    assert dataset.task == "multilabel" and dataset.classnames == VOC_CLASSES and len(dataset) == 3
    idx = VOC_CLASSES.index
    assert dataset.labels() == [[idx("dog"), idx("person")], [idx("train")], [idx("car")]]
    image, target = dataset[0]
    assert decode(image)[0] == 0 and target.shape == (20,) and target.sum() == 2
    assert target[idx("dog")] == target[idx("person")] == 1
    train = open_dataset("voc2007_multilabel", tmp_path, "trainval")
    assert train.labels() == [[idx("chair")], [idx("car")]]


def test_voc2007_crops_one_item_per_object(tmp_path):
    write_voc(tmp_path, per_class_lists=False)
    crops = open_dataset("voc2007", tmp_path, "trainval")
    assert crops.task == "zeroshot_classification"
    assert crops.labels() == [VOC_CLASSES.index("chair")] * 2 + [VOC_CLASSES.index("car")]
    assert [crops[i][0].size for i in range(3)] == [(8, 10), (11, 7), (14, 14)]


def test_mean_average_precision_equals_scikit_learn():
    from sklearn.metrics import average_precision_score

    rng = np.random.default_rng(0)
    targets = (rng.random((60, 20)) < 0.2).astype(int)
    targets[:, 3] = 0  # a class without positives has no AP and stays out of the mean
    # zero-shot logits: 100 x cosine, all near 20 (a sigmoid of them is 1.0 in float32: no order left)
    scores = 20 + rng.normal(size=(60, 20)) + 0.5 * targets
    scores[:10, 5] = scores[10:20, 5] = 20.25  # ties
    present = targets.sum(axis=0) > 0
    ours = average_precision_per_class(torch.tensor(scores), torch.tensor(targets))
    sklearn = average_precision_score(targets[:, present], scores[:, present], average=None)
    assert torch.isnan(ours[3]) and np.allclose(ours[torch.tensor(present)].numpy(), sklearn, atol=1e-6)
    assert mean_average_precision(torch.tensor(scores), torch.tensor(targets)) == pytest.approx(sklearn.mean(),
                                                                                                abs=1e-6)
