"""Zero-shot semantic segmentation (MaskCLIP, `clipmodule.dense.segment`): every pixel labelled by the class whose
prompt ensemble its dense feature is closest to; mIoU, per-class IoU and pixel accuracy with mmsegmentation's
definitions (`eval.seg_metrics`, ignore index 255). The task kind `segmentation` of a suite row:

    - {task: segmentation, dataset: builtin:shapes-seg, templates: simple}
    - {task: segmentation, dataset: voc2012, root: /data/VOCdevkit, segmentation: {background_threshold: 0.5}}
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torchvision.transforms import functional as TF

from clipmodule.checkpoints.io import preprocess_of
from clipmodule.dense.segment import SegmentOptions, segment_with_embeddings, split_alternatives
from clipmodule.errors import ClipModuleError
from clipmodule.eval.classifier import build_zeroshot_classifier
from clipmodule.eval.options import SegmentationSettings, TaskSpec
from clipmodule.eval.prompts import PROMPTS, Prompts, prompt_record, read_classnames, read_templates
from clipmodule.eval.readers.seg_specs import open_segmentation
from clipmodule.eval.readers.segmentation import SegmentationSet
from clipmodule.eval.seg_metrics import confusion_matrix, segmentation_metrics
from clipmodule.eval.tasks.features import Progress, model_tokenizer
from clipmodule.eval.tasks.kind import TaskContext, TaskKind, TrackedSet
from clipmodule.models.resize import resize_model


def segment_options(dataset: SegmentationSet, settings: SegmentationSettings) -> SegmentOptions:
    threshold = settings.background_threshold if dataset.background_index is not None else None
    return SegmentOptions(key_smoothing=settings.key_smoothing, prompt_denoising=settings.prompt_denoising,
                          background_threshold=threshold, background_index=dataset.background_index or 0,
                          window=settings.window, stride=settings.stride, vit_path=settings.vit_path)


def class_embeddings(model, dataset: SegmentationSet, templates: Prompts,
                     options: SegmentOptions) -> tuple[torch.Tensor, torch.Tensor]:
    """([M, embed_dim], [M] the class of each row): every name of every class (`prompt_names`' alternatives), without
    the background's when it is thresholded rather than prompted."""
    names = list(dataset.prompt_names or dataset.classnames)
    if options.background_threshold is not None:
        del names[options.background_index]
    names, owners = split_alternatives(names)
    return build_zeroshot_classifier(model, model_tokenizer(model), names, templates).t().contiguous(), owners


def predict_labels(model, image, text: tuple[torch.Tensor, torch.Tensor], options: SegmentOptions,
                   short_side: int | None) -> np.ndarray:
    """[H, W] labels of one PIL image at its own size (scores resized back bilinearly, as mmsegmentation)."""
    preprocess = preprocess_of(model)
    size = (image.height, image.width)
    if short_side is not None:
        image = TF.resize(image, short_side, interpolation=TF.InterpolationMode.BICUBIC)
    tensor = TF.normalize(TF.to_tensor(image.convert("RGB")), preprocess.mean, preprocess.std)[None]
    embeddings, owners = text
    result = segment_with_embeddings(model, tensor, embeddings, options, output_size=size, owners=owners)
    return result.labels[0].cpu().numpy()


@torch.no_grad()
def segmentation_eval(model, dataset: SegmentationSet, templates: Prompts,
                      settings: SegmentationSettings | None = None, device: str = "cpu",
                      progress: Progress = None) -> dict[str, Any]:
    """mIoU, aAcc, mAcc and per-class IoU/accuracy of MaskCLIP on `dataset` (see the module's docstring)."""
    settings = settings or SegmentationSettings()
    options = segment_options(dataset, settings)
    model = model.to(device).eval()
    text = class_embeddings(model, dataset, templates, options)
    if options.window is not None and options.window != model.config.vision.image_size:
        model = resize_model(model, image_size=options.window)
    classes = len(dataset.classnames)
    confusion = np.zeros((classes, classes), dtype=np.int64)
    task = progress.add_task("segmentation", total=len(dataset)) if progress is not None else None
    for index in range(len(dataset)):
        image, labels = dataset[index]
        predicted = predict_labels(model, image, text, options, settings.short_side)
        try:
            confusion += confusion_matrix(predicted, labels, classes, dataset.ignore_index)
        except ValueError as error:
            raise ClipModuleError(f"{dataset.name}: item {index}: {error}") from None
        if task is not None:
            progress.advance(task)
    return {**segmentation_metrics(confusion, dataset.classnames), "num_images": len(dataset)}


def _templates(spec: TaskSpec) -> Prompts:
    return read_templates(spec.templates)


def _open(spec: TaskSpec, preprocess: Callable) -> tuple:
    names = read_classnames(spec.classnames) if spec.classnames else None
    return (open_segmentation(spec.dataset, root=spec.root, split=spec.split, classnames=names),)


def _prompts(spec: TaskSpec, data: tuple) -> dict[str, Any]:
    """What the row's record stores under PROMPTS (and its resume key hashes): the prompts and the labels' source."""
    dataset = data[0]
    source = {"labels_source": dataset.labels_source} if dataset.labels_source else {}
    return {**prompt_record(list(dataset.prompt_names or dataset.classnames), _templates(spec)), **source}


def _run(model, spec: TaskSpec, data: tuple, context: TaskContext) -> dict[str, Any]:
    dataset, templates = data[0], _templates(spec)
    metrics = segmentation_eval(model, dataset, templates, spec.segmentation, str(context.loader.torch_device()),
                                context.progress)
    return {**metrics, PROMPTS: _prompts(spec, data)}


def _preflight(spec: TaskSpec) -> None:
    _templates(spec)
    settings = spec.segmentation or SegmentationSettings()
    SegmentOptions(key_smoothing=settings.key_smoothing, background_threshold=settings.background_threshold,
                   vit_path=settings.vit_path)


class SegmentationTracker:
    """A `data.zeroshot_sets` entry with `task: segmentation` during `fit`: read whole when the validation epoch
    ends (no loader), scored by the same code as `clipmodule eval segmentation`. Every rank evaluates the whole set
    (small and deterministic), so the values agree without a gather: `val/seg/<name>/mIoU|aAcc`, and
    `val/seg_mIoU` (`summary`) the mean mIoU over the segmentation sets."""

    def __init__(self, tracked: TrackedSet):
        if tracked.source is None:
            raise ClipModuleError(f"{tracked.where}: a segmentation set is named by a dataset spec "
                                  f"(builtin:shapes-seg, or a benchmark with its root), not shards or folders")
        data, root = tracked.source
        self.tracked, self.prompts = tracked, tracked.prompts()
        self.dataset = open_segmentation(data, root=root, classnames=tracked.classnames or None)

    def update(self, batch: dict[str, Any]) -> None:
        raise ClipModuleError(f"{self.tracked.where}: a segmentation set has no validation batches")

    def results(self) -> dict[str, Any]:
        metrics = segmentation_eval(self.tracked.model, self.dataset, self.prompts, device=str(self.tracked.device))
        return {f"val/seg/{self.tracked.name}/{name}": metrics[name] for name in ("mIoU", "aAcc")}

    @staticmethod
    def summary(results: dict[str, Any]) -> dict[str, Any]:
        values = [value for name, value in results.items() if name.startswith("val/seg/") and name.endswith("/mIoU")]
        return {"val/seg_mIoU": sum(values) / len(values)} if values else {}


KIND = TaskKind(name="segmentation", data_keys=("dataset",), open=_open, run=_run,
                preflight=_preflight, tracker=SegmentationTracker, prompts=_prompts)
"""No DataComp rank or group: DataComp's average is over its classification and retrieval tasks; the table shows
mIoU and pixel accuracy."""
