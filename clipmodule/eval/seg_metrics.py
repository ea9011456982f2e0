"""Semantic-segmentation metrics with mmsegmentation's definitions (`IoUMetric`), summed over a whole dataset.

Per class c, over every labelled pixel (the ground truth is not `ignore_index`, 255 by default):
    intersect_c = |pred = c and label = c|      union_c = |pred = c| + |label = c| - intersect_c
    IoU_c = intersect_c / union_c               Acc_c = intersect_c / |label = c|
    mIoU = nanmean IoU_c  (a class absent from both prediction and labels is NaN and left out)
    aAcc = sum intersect / labelled pixels      mAcc = nanmean Acc_c
The counts accumulate in one confusion matrix [label, prediction], so the result does not depend on batching.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

IGNORE_INDEX = 255


def confusion_matrix(predictions: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray, num_classes: int,
                     ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """[num_classes, num_classes] int64 counts (row: label, column: prediction) over the pixels not ignored."""
    predictions = torch.as_tensor(predictions).reshape(-1).long()
    labels = torch.as_tensor(labels).reshape(-1).long()
    if predictions.shape != labels.shape:
        raise ValueError(f"predictions ({predictions.numel()} pixels) and labels ({labels.numel()}) differ in size")
    keep = labels != ignore_index
    labels, predictions = labels[keep], predictions[keep]
    for name, values in (("label", labels), ("prediction", predictions)):
        if len(values) and (values.min() < 0 or values.max() >= num_classes):
            raise ValueError(f"a {name} outside 0..{num_classes - 1} (and not the ignore index {ignore_index})")
    counts = torch.bincount(labels * num_classes + predictions,
                            minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes).numpy().astype(np.int64)


def segmentation_metrics(confusion: np.ndarray, classnames: Sequence[str] | None = None) -> dict:
    """mIoU, aAcc, mAcc and the per-class IoU / Acc (by class name; NaN classes as None) of a confusion matrix."""
    confusion = np.asarray(confusion, dtype=np.float64)
    intersect = np.diag(confusion)
    area_label, area_pred = confusion.sum(axis=1), confusion.sum(axis=0)
    union = area_label + area_pred - intersect
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = intersect / union
        accuracy = intersect / area_label
    names = list(classnames) if classnames is not None else [str(index) for index in range(len(confusion))]
    labelled = area_label.sum()
    return {
        "mIoU": float(np.nanmean(iou)) if not np.isnan(iou).all() else float("nan"),
        "aAcc": float(intersect.sum() / labelled) if labelled else float("nan"),
        "mAcc": float(np.nanmean(accuracy)) if not np.isnan(accuracy).all() else float("nan"),
        "per_class_iou": {name: None if np.isnan(value) else float(value) for name, value in zip(names, iou)},
        "per_class_acc": {name: None if np.isnan(value) else float(value) for name, value in zip(names, accuracy)},
    }
