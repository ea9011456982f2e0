"""Image-caption selection (compositionality: SugarCrepe, Winoground, ARO): each item has I images and T captions,
caption i belonging to image i. The task kind `image_caption_selection`, scored as CLIP_benchmark's
`metrics/image_caption_selection.py` scores it, on cosine similarities of the normalised embeddings:

    text_acc    every image's most similar caption (argmax, the first on a tie) is its own: Winoground's text
                score; SugarCrepe's and ARO's accuracy (one image, the true caption first)
    image_acc   every caption's most similar image is its own: Winoground's image score (1 with one image)
    acc         both: Winoground's group score; equal to text_acc with one image

For ARO's sets `macro_acc` is ARO's headline number as its authors compute it: the mean over relations (or
attribute pairs) of their accuracy, without the relations they list as symmetric (VG-Relation) or pairs seen
fewer than 25 times (VG-Attribution).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.utils.data import Dataset

from clipmodule.errors import ClipModuleError
from clipmodule.eval.names import DATA
from clipmodule.eval.options import LoaderOptions, TaskSpec
from clipmodule.eval.readers import open_dataset
from clipmodule.eval.readers.items import ImageItems
from clipmodule.eval.readers.selection import TASK, SelectionDataset
from clipmodule.eval.tasks.features import FeatureCache, Progress, data_damage, extract_features, model_tokenizer
from clipmodule.eval.tasks.kind import TaskContext, TaskKind

ARO_MIN_ATTRIBUTE_COUNT = 25


def selection_metrics(image_embeddings: torch.Tensor, text_embeddings: torch.Tensor) -> dict[str, Any]:
    """{text_acc, image_acc, acc} of normalised embeddings [N, I, D] and [N, T, D], and each item's text hit
    (`text_correct`, for a macro accuracy)."""
    scores = torch.einsum("nid,ntd->nit", image_embeddings, text_embeddings)
    own = torch.arange(min(scores.shape[1], scores.shape[2]))
    text_correct = (scores.argmax(dim=2)[:, : len(own)] == own).all(dim=1)
    image_correct = (scores.argmax(dim=1)[:, : len(own)] == own).all(dim=1)
    return {"text_acc": text_correct.float().mean().item(), "image_acc": image_correct.float().mean().item(),
            "acc": (text_correct & image_correct).float().mean().item(), "text_correct": text_correct}


@functools.cache
def aro_excluded_relations() -> frozenset[str]:
    path = DATA / "compositional" / "aro_excluded_relations.txt"
    return frozenset(line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip())


def aro_macro_accuracy(name: str, correct: Sequence[bool], groups: Sequence[str]) -> float | None:
    """ARO's macro accuracy of `vg_relation` or `vg_attribution` from each item's hit and group; None when no
    group is left to average (a small copy: every attribute pair seen fewer than 25 times)."""
    by_group: dict[str, list[bool]] = {}
    for hit, group in zip(correct, groups):
        by_group.setdefault(group, []).append(bool(hit))
    if name == "vg_relation":
        kept = [hits for group, hits in by_group.items() if group not in aro_excluded_relations()]
    else:
        kept = [hits for hits in by_group.values() if len(hits) >= ARO_MIN_ATTRIBUTE_COUNT]
    if not kept:
        return None
    return sum(sum(hits) / len(hits) for hits in kept) / len(kept)


@torch.no_grad()
def _text_embeddings(model, captions: list[list[str]], device: torch.device, where: str) -> torch.Tensor:
    counts = {len(texts) for texts in captions}
    if len(counts) != 1:
        raise ClipModuleError(f"{where}: items have different numbers of captions ({sorted(counts)})")
    flat = [text for texts in captions for text in texts]
    tokenizer = model_tokenizer(model)
    embedded = torch.cat([model.encode_text(tokenizer(flat[i: i + 256]).to(device), normalize=True).float().cpu()
                          for i in range(0, len(flat), 256)])
    return embedded.view(len(captions), counts.pop(), -1)


def _image_embeddings(model, dataset, options: LoaderOptions, progress: Progress,
                      cache: FeatureCache | None = None) -> tuple[torch.Tensor, list]:
    """([N, I, D] normalised image embeddings, each item's captions). Items listing their image sources
    (`SelectionDataset`) have each distinct image decoded and encoded once, and once per suite with the suite's
    `cache` (SugarCrepe's entries and subsets share COCO images); any other dataset of (images [I, C, H, W],
    captions) is read item by item."""
    items = dataset.items if isinstance(dataset, SelectionDataset) else None
    if items is None:
        def encode(images: torch.Tensor) -> torch.Tensor:
            flat = model.encode_image(images.flatten(0, 1), normalize=True)
            return flat.view(images.shape[0], images.shape[1], -1)

        return extract_features(encode, dataset, options, progress, "caption selection", captions=True)
    known = cache.by_image if cache is not None else {}
    key = id(dataset.transform)  # one suite, one preprocess object: rows share it
    unique = list(dict.fromkeys(source for sources, _ in items for source in sources))
    todo = [source for source in unique if (key, source) not in known]
    if todo:
        images = ImageItems([(source, 0) for source in todo], getattr(dataset, "name", "images"), dataset.transform,
                            None)
        features, _ = extract_features(functools.partial(model.encode_image, normalize=True), images, options,
                                       progress, "caption selection")
        known.update({(key, source): feature for source, feature in zip(todo, features)})
    embeddings = torch.stack([torch.stack([known[(key, source)] for source in sources]) for sources, _ in items])
    return embeddings, [list(captions) for _, captions in items]


def image_caption_selection(model: torch.nn.Module, dataset: Dataset, options: LoaderOptions | None = None,
                            progress: Progress = None, cache: FeatureCache | None = None) -> dict[str, Any]:
    """The selection accuracies (module docstring) of a model on a dataset of (images [I, C, H, W], captions)."""
    options = options or LoaderOptions()
    device = options.torch_device()
    model = model.to(device).eval()
    name = getattr(dataset, "name", "dataset")
    images, captions = _image_embeddings(model, dataset, options, progress, cache)
    metrics = selection_metrics(images, _text_embeddings(model, captions, device, name))
    correct = metrics.pop("text_correct")
    groups = getattr(dataset, "groups", None)
    if groups is not None and (macro := aro_macro_accuracy(name, correct.tolist(), groups)) is not None:
        metrics["macro_acc"] = macro
    return {**metrics, "num_samples": len(captions), **data_damage(dataset)}


def _open(spec: TaskSpec, preprocess: Callable) -> tuple:
    if spec.dataset.startswith("builtin:"):
        from clipmodule.eval.readers.builtin import builtin_selection

        return (builtin_selection(spec.dataset, preprocess),)
    if not spec.root:
        raise ClipModuleError(f"{spec.label()}: an image_caption_selection task reads a benchmark copy: give its "
                              "folder (--dataset_root DIR, or `root:` in the suite row)")
    dataset = open_dataset(spec.dataset, spec.root, spec.split)
    if dataset.task != TASK:
        raise ClipModuleError(f"{spec.dataset}: a {dataset.task.replace('_', ' ')} dataset, not an image-caption "
                              "selection one (sugar_crepe/<subset>, winoground, vg_relation, vg_attribution)")
    return (dataset.with_transform(preprocess),)


def _run(model, spec: TaskSpec, data: tuple, context: TaskContext) -> dict[str, Any]:
    return image_caption_selection(model, data[0], context.loader, context.progress, context.cache)


KIND = TaskKind(name=TASK, data_keys=("dataset",), open=_open, run=_run)
