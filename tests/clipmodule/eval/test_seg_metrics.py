"""mIoU, per-class IoU and pixel accuracy equal a numpy confusion-matrix reference and mmsegmentation's formula
(`intersect_and_union` + `total_area_to_metrics`, written out here: histograms of the labelled pixels) on planted
masks."""

import numpy as np
import pytest
import torch

from clipmodule.eval.seg_metrics import confusion_matrix, segmentation_metrics

CLASSES = 5


def _planted(seed: int):
    """Label maps with rectangles of known classes, a 255 border, and predictions that are right on most pixels."""
    rng = np.random.default_rng(seed)
    labels = np.zeros((2, 40, 48), dtype=np.int64)
    for image in labels:
        for label in (1, 2, 3):  # class 4 is never in the labels; predictions sometimes say it
            top, left = rng.integers(0, 24, size=2)
            image[top:top + 16, left:left + 20] = label
        image[:2], image[:, -2:] = 255, 255
    predictions = labels.copy()
    predictions[predictions == 255] = 0
    flip = rng.random(labels.shape) < 0.15
    predictions[flip] = rng.integers(0, CLASSES, size=int(flip.sum()))
    return predictions, labels


def _numpy_reference(predictions, labels):
    keep = labels != 255
    matrix = np.zeros((CLASSES, CLASSES), dtype=np.int64)
    np.add.at(matrix, (labels[keep], predictions[keep]), 1)
    iou = np.diag(matrix) / (matrix.sum(0) + matrix.sum(1) - np.diag(matrix))
    return matrix, iou


def _mmseg_formula(predictions, labels):
    """mmsegmentation's: per image, histc of the intersection, the prediction and the label; summed; then ratios."""
    total = np.zeros((4, CLASSES))
    for pred, label in zip(torch.as_tensor(predictions), torch.as_tensor(labels)):
        mask = label != 255
        pred, label = pred[mask], label[mask]
        intersect = pred[pred == label]
        area_intersect = torch.histc(intersect.float(), bins=CLASSES, min=0, max=CLASSES - 1)
        area_pred = torch.histc(pred.float(), bins=CLASSES, min=0, max=CLASSES - 1)
        area_label = torch.histc(label.float(), bins=CLASSES, min=0, max=CLASSES - 1)
        total += np.stack([area_intersect, area_pred + area_label - area_intersect, area_pred, area_label])
    intersect, union, _, area_label = total
    with np.errstate(invalid="ignore", divide="ignore"):
        iou, acc = intersect / union, intersect / area_label
    return {"aAcc": intersect.sum() / area_label.sum(), "mIoU": np.nanmean(iou), "mAcc": np.nanmean(acc), "IoU": iou}


@pytest.mark.parametrize("seed", [0, 1])
def test_metrics_equal_numpy_reference_and_mmsegmentation(seed):
    predictions, labels = _planted(seed)
    matrix = sum(confusion_matrix(pred, label, CLASSES) for pred, label in zip(predictions, labels))
    reference, iou = _numpy_reference(predictions, labels)
    assert np.array_equal(matrix, reference)
    metrics = segmentation_metrics(matrix)
    mmseg = _mmseg_formula(predictions, labels)
    for key in ("aAcc", "mIoU", "mAcc"):
        assert metrics[key] == pytest.approx(mmseg[key], abs=1e-12)
    assert [metrics["per_class_iou"][str(c)] for c in range(CLASSES)] == pytest.approx(list(iou), abs=1e-12)
    assert [metrics["per_class_iou"][str(c)] for c in range(CLASSES)] == pytest.approx(list(mmseg["IoU"]), abs=1e-12)


def test_absent_class_is_nan_and_left_out_of_the_mean():
    labels = np.array([[0, 0, 1, 255]])
    predictions = np.array([[0, 1, 1, 2]])  # the ignored pixel's prediction does not count
    metrics = segmentation_metrics(confusion_matrix(predictions, labels, 3), ["a", "b", "c"])
    assert metrics["per_class_iou"] == {"a": 0.5, "b": 0.5, "c": None}
    assert metrics["mIoU"] == 0.5 and metrics["aAcc"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="a label outside"):
        confusion_matrix(np.array([0]), np.array([7]), 3)
