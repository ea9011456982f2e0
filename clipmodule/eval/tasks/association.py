"""Association games (WinoGAViL, as DataComp scores it): for each game the model ranks the candidate images by their
similarity to the prompt "A <cue>" / "An <cue>", chooses as many as the game has associations, and scores the
choice by its Jaccard index with the associations. Reported: the mean over all games and by number of candidates
(`jaccard_5`, `_6`, `_10`, `_12`, `_5_6`, `_10_12`); DataComp ranks by `jaccard_10_12` and counts it in its
Retrieval group (mlfoundations/datacomp, eval_utils/wino_eval.py). The task kind `association`."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from clipmodule.errors import ClipModuleError
from clipmodule.eval.options import TaskSpec
from clipmodule.eval.readers.base import open_dataset
from clipmodule.eval.readers.winogavil import Game
from clipmodule.eval.tasks.features import data_damage, extract_features, model_tokenizer
from clipmodule.eval.tasks.kind import TaskContext, TaskKind

SIZES = {"5": (5, 5), "6": (6, 6), "10": (10, 10), "12": (12, 12), "5_6": (0, 6), "10_12": (10, 99)}


def cue_prompt(cue: str) -> str:
    """DataComp's prompt: the lower-cased cue after "An" (a vowel first) or "A"."""
    cue = cue.lower()
    return f"An {cue}" if cue[:1] in "aeiou" else f"A {cue}"


def choose(similarities: np.ndarray, count: int) -> set[int]:
    """The positions of the `count` most similar candidates (numpy's argsort, as DataComp takes them)."""
    return {int(position) for position in np.argsort(similarities)[-count:]}


def jaccard(chosen: set[int], associations: set[int]) -> float:
    return len(chosen & associations) / len(chosen | associations)


def association_scores(image_features: torch.Tensor, cue_features: torch.Tensor,
                       games: Sequence[Game]) -> tuple[np.ndarray, np.ndarray]:
    """(Jaccard index per game, candidates per game) from normalised image and cue embeddings (row g: game g's cue)."""
    scores, sizes = [], []
    for game, cue in zip(games, cue_features):
        similarities = (image_features[list(game.candidates)].float() @ cue.float()).numpy()
        wanted = {position for position, image in enumerate(game.candidates) if image in game.associations}
        scores.append(jaccard(choose(similarities, len(wanted)), wanted))
        sizes.append(len(game.candidates))
    return np.asarray(scores), np.asarray(sizes)


def jaccard_metrics(scores: np.ndarray, sizes: np.ndarray) -> dict[str, float]:
    """The mean Jaccard index over all games and over the games of each candidate count (absent counts left out)."""
    metrics = {"jaccard": float(scores.mean())}
    for name, (low, high) in SIZES.items():
        chosen = scores[(sizes >= low) & (sizes <= high)]
        if len(chosen):
            metrics[f"jaccard_{name}"] = float(chosen.mean())
    return metrics


def association(model: torch.nn.Module, dataset, context: TaskContext) -> dict[str, Any]:
    options = context.loader
    device = options.torch_device()
    model = model.to(device).eval()
    images, order = extract_features(functools.partial(model.encode_image, normalize=True), dataset, options,
                                     context.progress, "association images")
    images = images[torch.argsort(torch.as_tensor(order))]  # row i: image i (the loader keeps order; be sure)
    tokenizer = model_tokenizer(model)
    prompts = [cue_prompt(game.cue) for game in dataset.games]
    with torch.no_grad():
        cues = torch.cat([model.encode_text(tokenizer(prompts[i : i + 256]).to(device), normalize=True).float().cpu()
                          for i in range(0, len(prompts), 256)])
    scores, sizes = association_scores(images, cues, dataset.games)
    return {**jaccard_metrics(scores, sizes), "num_games": len(scores), "num_images": len(dataset),
            **data_damage(dataset)}


def _open(spec: TaskSpec, preprocess: Callable) -> tuple:
    if spec.root is None:
        raise ClipModuleError(f"{spec.label()}: an association task reads a benchmark copy; give its folder (root:)")
    dataset = open_dataset(spec.dataset, spec.root, spec.split)
    if getattr(dataset, "task", None) != "association":
        raise ClipModuleError(f"{spec.dataset}: not an association dataset (winogavil)")
    return (dataset.with_transform(preprocess),)


def _run(model, spec: TaskSpec, data: tuple, context: TaskContext) -> dict[str, Any]:
    return association(model, data[0], context)


def main_metric(metrics: dict[str, Any], dataset: str | None) -> tuple[str, float] | None:
    """DataComp's: the mean Jaccard index over the games with 10 or 12 candidates."""
    return ("jaccard_10_12", metrics["jaccard_10_12"]) if "jaccard_10_12" in metrics else None


KIND = TaskKind(name="association", data_keys=("dataset",), open=_open, run=_run, main_metric=main_metric,
                group="Retrieval")
