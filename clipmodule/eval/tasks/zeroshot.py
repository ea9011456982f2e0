"""Zero-shot classification: class embeddings from class names × templates (`eval.classifier`), logits
100 · image·W; top-1, top-5 and mean per-class recall (torchmetrics). A multi-label set (VOC2007) is scored by
mAP (`multilabel`). The task kind `zeroshot` of a suite row."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.utils.data import Dataset

from clipmodule.errors import ClipModuleError
from clipmodule.eval.classifier import build_zeroshot_classifier, zeroshot_logits
from clipmodule.eval.languages import ENGLISH, classnames_in, split_for, templates_in
from clipmodule.eval.metrics import DETAIL, classification_metrics, per_class_results
from clipmodule.eval.names import SOURCES, align_classnames, classnames_for, dataset_key, templates_for
from clipmodule.eval.options import LoaderOptions, TaskSpec
from clipmodule.eval.prompts import PROMPTS, Prompts, prompt_record, read_classnames, read_templates
from clipmodule.eval.readers import open_classification
from clipmodule.eval.subgroups import datacomp_metrics
from clipmodule.eval.tasks.attributes import zeroshot_attributes
from clipmodule.eval.tasks.features import FeatureCache, Progress, data_damage, image_features, model_tokenizer
from clipmodule.eval.tasks.kind import BY_DATASET, TaskContext, TaskKind, TrackedSet
from clipmodule.eval.tasks.multilabel import zeroshot_multilabel

# DataComp ranks these by mean per-class recall (their classes are unbalanced), the others by top-1.
MEAN_RECALL_SETS = ("caltech101", "fgvc_aircraft", "flowers", "pets")
# ...and these by their distribution-shift or fairness metric (`eval.subgroups`; tasklist.yml's main_metric).
SHIFT_METRICS = {"wilds/iwildcam": "macro_f1", "wilds/fmow": "worst_region_top1", "dollar_street": "worst_income_top5",
                 "geode": "worst_region_top1"}
ENGLISH_TEMPLATES = ("imagenet", "simple")  # built-in template sets, English only


def zeroshot_classification(model: torch.nn.Module, dataset: Dataset, classnames: Sequence[str],
                            templates: Prompts, options: LoaderOptions | None = None,
                            progress: Progress = None, where: str = "templates",
                            cache: FeatureCache | None = None, detail: bool = False) -> dict[str, Any]:
    """Zero-shot top-1/top-5/mean per-class recall of a CLIP model with the prompt ensemble (or class-specific
    prompts: see `zeroshot.build_zeroshot_classifier`); errors about the templates name them as `where`.
    With a `cache`, image features already computed for the dataset are reused (see `FeatureCache`); with `detail`,
    the per-class results (and DataComp's groups) come under `metrics.DETAIL`."""
    options = options or LoaderOptions()
    model = model.to(options.torch_device()).eval()
    key = (tuple(classnames), repr(templates))  # ImageNet, -V2 and -Sketch share one classifier
    classifier = cache.classifiers.get(key) if cache is not None else None
    if classifier is None:
        classifier = build_zeroshot_classifier(model, model_tokenizer(model), classnames, templates, where=where)
        if cache is not None:
            cache.classifiers[key] = classifier
    features, labels = image_features(model, "embedding", dataset, options, progress, "zero-shot", cache)
    if len(classnames) < 2:  # torchmetrics' own error is a traceback
        raise ClipModuleError(f"{getattr(dataset, 'name', 'dataset')}: zero-shot classification needs at least "
                              f"two classes, not {len(classnames)}")
    logits, labels = zeroshot_logits(features, classifier.cpu()), torch.tensor(labels)
    shifts = datacomp_metrics(dataset_key(str(getattr(dataset, "name", ""))), logits, labels,
                              getattr(dataset, "metadata", None))  # WILDS and fairness sets: DataComp's metrics
    groups = shifts.pop("groups", None)
    metrics = {**classification_metrics(logits, labels, len(classnames)), **shifts, **data_damage(dataset)}
    if detail:
        metrics[DETAIL] = {**per_class_results(logits, labels, len(classnames)),
                           **({"groups": groups} if groups else {})}
    return metrics


def _by_language(spec: TaskSpec) -> bool:
    from clipmodule.eval.readers import is_benchmark_name, reader

    return bool(spec.root) and is_benchmark_name(str(spec.dataset)) and reader(str(spec.dataset)).by_language


def _translated(spec: TaskSpec) -> bool:
    """Class names and templates in another language than English, from CLIP_benchmark's lists (a template file
    is read as written; its class names then come from a class-name file or the copy)."""
    return spec.language not in (None, ENGLISH) and not spec.classnames


def _own_templates(spec: TaskSpec, dataset) -> bool:
    """CLIP_benchmark's webdataset copies carry their own names and templates, which CLIP_benchmark uses."""
    return spec.templates == "clip_benchmark" and getattr(dataset, "templates", None) is not None


def prompt_templates(spec: TaskSpec, dataset=None) -> Prompts | None:
    """The row's prompts: from the shipped data by dataset name (`openai`, `clip_benchmark`: a webdataset
    copy's own), or `read_templates`."""
    if dataset is not None and _own_templates(spec, dataset):
        return list(dataset.templates)
    if spec.templates == "clip_benchmark" and dataset is None and str(spec.dataset).startswith("wds/"):
        return None  # known once the copy is opened (the preflight cannot tell)
    if _translated(spec) and (spec.templates in SOURCES or spec.templates in ENGLISH_TEMPLATES):
        if spec.templates != "clip_benchmark":
            raise ClipModuleError(f"{spec.label()}: {spec.templates} prompts are English; language "
                                  f"{spec.language!r} takes CLIP_benchmark's (templates: clip_benchmark)")
        if dataset is None and _by_language(spec):
            return None  # the copy carries its own (Babel-ImageNet), known once it is opened
        return templates_in(spec.dataset, spec.language)
    if spec.templates in SOURCES:
        return templates_for(spec.dataset, spec.templates)
    return read_templates(spec.templates)


def spec_classnames(spec: TaskSpec) -> list[str] | None:
    """The names of the row's class-name file, or None (the dataset's own are used)."""
    return read_classnames(spec.classnames) if spec.classnames else None


def prompt_classnames(spec: TaskSpec, dataset) -> list[str]:
    """The names the prompts use: a class-name file's, the shipped data's (put in the dataset's label order),
    or the dataset's own."""
    if dataset.classnames is None:  # a face-attribute release (`readers.faces`)
        raise ClipModuleError(f"{spec.label()}: {spec.dataset} ships no class names to prompt with; give its "
                              "`objective:name` lines with classnames: (DataComp's copy carries them)")
    if spec.classnames or spec.templates not in SOURCES or _own_templates(spec, dataset):
        return list(dataset.classnames)
    named = classnames_for(spec.dataset, spec.templates)
    if _translated(spec):
        return classnames_in(spec.dataset, spec.language, list(dataset.classnames), named)
    if not named:
        return list(dataset.classnames)
    return align_classnames(list(dataset.classnames), named, spec.label(), dataset=spec.dataset)


def _preflight(spec: TaskSpec) -> None:
    spec_classnames(spec)
    prompt_templates(spec)


def _open(spec: TaskSpec, preprocess: Callable) -> tuple:
    return (open_classification(spec.dataset, preprocess, spec_classnames(spec), root=spec.root,
                                split=split_for(spec)),)


def _check_data(spec: TaskSpec, data: tuple) -> None:
    prompt_classnames(spec, data[0])  # names that do not fit the copy stop a suite now, not hours later


def _prompts(spec: TaskSpec, data: tuple) -> dict[str, Any]:
    return prompt_record(prompt_classnames(spec, data[0]), prompt_templates(spec, data[0]))


def _run(model, spec: TaskSpec, data: tuple, context: TaskContext) -> dict[str, Any]:
    dataset = data[0]
    names, templates = prompt_classnames(spec, dataset), prompt_templates(spec, dataset)
    if getattr(dataset, "task", None) == "attributes":  # FairFace, UTKFace: DataComp's fairness protocol
        metrics = zeroshot_attributes(model, dataset, names, templates, context.loader, context.progress,
                                      where=spec.templates, cache=context.cache)
    elif getattr(dataset, "task", None) == "multilabel":  # VOC2007: mAP
        metrics = zeroshot_multilabel(model, dataset, names, templates, context.loader, context.progress,
                                      where=spec.templates, detail=True)
    else:
        metrics = zeroshot_classification(model, dataset, names, templates, context.loader, context.progress,
                                          where=spec.templates, cache=context.cache, detail=True)
    return {**metrics, PROMPTS: prompt_record(names, templates)}  # the record says what was prompted


def main_metric(metrics: dict[str, Any], dataset: str | None) -> tuple[str, float] | None:
    """DataComp's: mAP for a multi-label set, mean per-class recall on Caltech-101, FGVC-Aircraft, Flowers-102 and
    Pets, `SHIFT_METRICS` on iWildCam, FMoW, Dollar Street and GeoDE, top-1 elsewhere."""
    if "mean_average_precision" in metrics:
        return "mean_average_precision", metrics["mean_average_precision"]
    name = "mean_per_class_recall" if dataset in MEAN_RECALL_SETS else SHIFT_METRICS.get(dataset or "", "top1")
    return (name, metrics[name]) if name in metrics else None


class ZeroShotTracker:
    """Top-1/top-5 of one labelled set during `fit`: the paper's prompt-ensemble classifier (built once per
    validation epoch, the same code as `clipmodule eval zeroshot`) and torchmetrics accuracies, which sum over
    ranks when computed. Logged as `val/zeroshot/<name>/top1|top5`, `val/zeroshot_top1|top5` for the unnamed set."""

    def __init__(self, tracked: TrackedSet):
        from torchmetrics.classification import MulticlassAccuracy

        if tracked.source is not None:
            raise ClipModuleError(f"{tracked.where}: {tracked.source[0]} is neither labelled shards nor a folder of "
                                  f"class folders (a zero-shot set during fit is one of them)")
        self.model, self.may_be_empty = tracked.model, tracked.may_be_empty
        self.prefix = f"val/zeroshot/{tracked.name}/" if tracked.name else "val/zeroshot_"
        where = f"{tracked.where}.templates" if tracked.name else tracked.where
        self.classifier = build_zeroshot_classifier(tracked.model, tracked.tokenizer, tracked.classnames,
                                                    tracked.prompts(), where=where)
        classes = len(tracked.classnames)
        self.metrics = {f"top{k}": MulticlassAccuracy(classes, top_k=min(k, classes), average="micro")
                        .to(tracked.device) for k in (1, 5)}

    def update(self, batch: dict[str, Any]) -> None:
        logits = zeroshot_logits(self.model.encode_image(batch["image"], normalize=True), self.classifier)
        for metric in self.metrics.values():
            metric.update(logits, batch["label"])

    def results(self) -> dict[str, Any]:
        if self.may_be_empty and not self.metrics["top1"].update_count:
            return {}  # model.zeroshot_classnames without zero-shot shards in this loop: nothing to say
        out = {}
        for name, metric in self.metrics.items():
            out[f"{self.prefix}{name}"] = metric.compute()
            metric.reset()
        return out


KIND = TaskKind(name="zeroshot", data_keys=("dataset",), open=_open, run=_run, preflight=_preflight,
                check_data=_check_data, main_metric=main_metric, group=BY_DATASET, tracker=ZeroShotTracker,
                prompts=_prompts)
