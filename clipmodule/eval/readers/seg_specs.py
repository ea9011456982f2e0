"""The one dispatcher of segmentation data: `builtin:shapes-seg` (`segmentation`) or a benchmark's local copy
(`seg_benchmarks`)."""

from __future__ import annotations

from collections.abc import Sequence

from clipmodule.errors import ClipModuleError
from clipmodule.eval.readers.seg_benchmarks import SEGMENTATION_READERS, open_benchmark_segmentation
from clipmodule.eval.readers.segmentation import SegmentationSet, shapes_seg


def open_segmentation(spec: str, root: str | None = None, split: str | None = None,
                      classnames: Sequence[str] | None = None) -> SegmentationSet:
    """`builtin:shapes-seg`, or a benchmark (voc2012, pascal_context_59/60 and their _mat
    forms from the original .mat release, ade20k, coco_stuff, cityscapes) read
    from its local copy at `root`; `classnames` replace the set's own (same count)."""
    if spec == "builtin:shapes-seg":
        dataset = shapes_seg(spec)
    else:
        if spec not in SEGMENTATION_READERS:
            raise ClipModuleError(f"{spec}: not a segmentation dataset (builtin:shapes-seg, "
                                  f"{', '.join(SEGMENTATION_READERS)} with root=DIR)")
        if root is None:
            raise ClipModuleError(f"{spec}: a benchmark dataset; give the folder of its local copy (`root:` in the "
                                  "suite row, --dataset_root DIR)")
        dataset = open_benchmark_segmentation(spec, root, split)
    if classnames is not None:
        if len(classnames) != len(dataset.classnames):
            raise ClipModuleError(f"{spec}: has {len(dataset.classnames)} classes but {len(classnames)} class names "
                                  "were given")
        dataset.classnames, dataset.prompt_names = list(classnames), None
    return dataset
