"""Zero-shot segmentation during validation: the `data.zeroshot_sets` entries with `task: segmentation`, scored by
the same code as `clipmodule eval segmentation` (MaskCLIP, `clipmodule.eval.tasks.segmentation`).

Every rank evaluates every set whole (the sets are small and the result is deterministic), so the logged values
agree across ranks without a gather: `val/seg/<name>/mIoU`, `val/seg/<name>/aAcc` and `val/seg_mIoU`, the mean
mIoU over the segmentation sets.
"""

from __future__ import annotations

from typing import Any

import torch

from clipmodule.eval.prompts import read_templates
from clipmodule.eval.readers.seg_specs import open_segmentation
from clipmodule.eval.readers.segmentation import SegmentationSet
from clipmodule.eval.tasks.segmentation import segmentation_eval


def open_segmentation_sets(sets: dict[str, tuple[str, str | None, list[str], Any]]) -> dict[str, SegmentationSet]:
    """The sets opened (a missing copy fails here, when validation starts)."""
    return {name: open_segmentation(data, root=root, classnames=classnames or None)
            for name, (data, root, classnames, _) in sets.items()}


def segmentation_results(model: torch.nn.Module, datasets: dict[str, SegmentationSet],
                         templates: dict[str, Any], default_templates: list[str],
                         device: torch.device) -> dict[str, float]:
    """The metrics to log, by name (see the module's docstring)."""
    out: dict[str, float] = {}
    for name, dataset in datasets.items():
        given = templates.get(name)
        prompts = default_templates if given is None else read_templates(given) if isinstance(given, str) else given
        metrics = segmentation_eval(model, dataset, list(prompts), device=str(device))
        out[f"val/seg/{name}/mIoU"] = metrics["mIoU"]
        out[f"val/seg/{name}/aAcc"] = metrics["aAcc"]
    if datasets:
        values = [out[f"val/seg/{name}/mIoU"] for name in datasets]
        out["val/seg_mIoU"] = sum(values) / len(values)
    return out
