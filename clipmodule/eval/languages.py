"""Evaluation in other languages (CLIP_benchmark's `--language`): a row's `language` picks

    the class names and templates CLIP_benchmark ships for it (`templates: clip_benchmark`; ar, cn, it, jp for
                 ImageNet-1k and the test sets sharing its classes, assets/multilingual/), or
    the split of a dataset released per language (XTD-10/200, Flickr30k-200, Crossmodal-3600, Babel-ImageNet:
                 `readers.multilingual`).

A suite row whose `language` lists several (`language: [de, fr, ja]` or "de,fr,ja") becomes one row per language
(`expand_languages`), and the table gets each dataset's average over its languages (`language_averages`). The
text encoder is the model's own tokenizer: a multilingual model (an HF text tower) reads the prompts as they are.
Kept free of torch.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

from clipmodule.errors import ClipModuleError
from clipmodule.eval.names import IMAGENET_FULL, dataset_key
from clipmodule.eval.options import TaskSpec

DATA = Path(__file__).resolve().parents[1] / "assets" / "multilingual"
ENGLISH = "en"


def shipped_languages() -> list[str]:
    """The languages CLIP_benchmark ships class names for (English in assets/benchmarks/)."""
    return sorted([ENGLISH, *(path.name.split("_")[0] for path in DATA.glob("*_classnames.json"))])


@functools.cache
def _lists(language: str, kind: str) -> dict[str, list[str]]:
    path = DATA / f"{language}_{kind}.json"
    if not path.is_file():
        raise ClipModuleError(f"language {language!r}: CLIP_benchmark ships no class names or templates in it "
                              f"(languages: {', '.join(shipped_languages())})")
    return json.loads(path.read_text(encoding="utf-8"))


def _entry(name: str, language: str, kind: str) -> list[str]:
    lists = _lists(language, kind)
    key = dataset_key(name)
    key = "imagenet1k" if key in IMAGENET_FULL else key  # the test sets sharing ImageNet's classes and order
    if key not in lists:
        raise ClipModuleError(f"{name}: CLIP_benchmark ships {language} class names and templates only for "
                              f"{', '.join(sorted(lists))}; give a class-name and a template file in {language}")
    return list(lists[key])


def classnames_in(name: str, language: str, own: list[str], english: list[str] | None) -> list[str]:
    """The `language` class names of dataset `name`, in the order of its own labels: CLIP_benchmark's lists are in
    the English list's order, so the dataset's own names must be that list in that order (ImageNet's are)."""
    names = _entry(name, language, "classnames")
    if english is None or list(own) != list(english) or len(names) != len(own):
        raise ClipModuleError(f"{name}: the {language} class names ({len(names)}) follow CLIP_benchmark's English "
                              f"list, which this copy's {len(own)} labels do not: give a class-name file in {language}")
    return names


def templates_in(name: str, language: str) -> list[str]:
    return _entry(name, language, "zeroshot_classification_templates")


def split_for(spec: TaskSpec) -> str | None:
    """The split a row reads: its language where the dataset is released per language, else its split. A
    language on a dataset with one language of captions is refused (it would be silently ignored)."""
    from clipmodule.eval.readers import is_benchmark_name, reader

    if spec.root and spec.dataset and is_benchmark_name(spec.dataset) and reader(spec.dataset).by_language:
        if spec.language and spec.split and spec.language != spec.split:
            raise ClipModuleError(f"{spec.label()}: give the language once (language {spec.language!r}, "
                                  f"split {spec.split!r})")
        return spec.language or spec.split
    if spec.language not in (None, ENGLISH) and spec.task != "zeroshot":
        raise ClipModuleError(f"{spec.label()}: {spec.dataset} is not released per language; language "
                              f"{spec.language!r} applies to xtd10, xtd200, flickr30k-200, crossmodal3600, "
                              "babel_imagenet, or to zero-shot class names")
    return spec.split


def _languages(value: Any) -> list[str]:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return [str(part) for part in value]


def expand_languages(tasks: list[TaskSpec]) -> list[TaskSpec]:
    """One row per language of a row listing several; each is labelled `<row>:<language>`."""
    out = []
    for spec in tasks:
        languages = _languages(spec.language) if spec.language is not None else [None]
        if len(languages) == 1:
            out.append(replace(spec, language=languages[0]) if languages[0] != spec.language else spec)
            continue
        for language in languages:
            out.append(replace(spec, language=language, name=f"{spec.label()}:{language}"))
    return out


def language_averages(rows: list[dict[str, Any]], metric_of) -> list[dict[str, Any]]:
    """[{dataset, task, languages, score}] for each (task, dataset) evaluated in two or more languages: the mean
    of `metric_of(row)` (a (name, value) pair, or None) over its languages."""
    groups: dict[tuple[str, str], dict[str, float]] = {}
    for row in rows:
        language = (row.get("spec") or {}).get("language")
        metric = metric_of(row)
        if language and metric is not None:
            groups.setdefault((row["task"], row["spec"].get("dataset") or ""), {})[language] = metric[1]
    return [{"task": task, "dataset": dataset, "languages": sorted(scores),
             "score": sum(scores.values()) / len(scores)}
            for (task, dataset), scores in groups.items() if len(scores) > 1]


def language_metrics(averages: list[dict[str, Any]]) -> dict[str, float]:
    """`language_averages` as MLflow metrics: `avg_languages/<task>/<dataset>` (characters MLflow refuses -> "_")."""
    return {re.sub(r"[^A-Za-z0-9_./ -]", "_", f"avg_languages/{item['task']}/{item['dataset']}"): item["score"]
            for item in averages}


def language_lines(rows: list[dict[str, Any]], metric_of) -> list[str]:
    """Markdown lines of `language_averages` (none when no dataset ran in several languages)."""
    averages = language_averages(rows, metric_of)
    if not averages:
        return []
    lines = ["", "Averages over languages (each row's main metric, in percent):", "",
             "| task | data | languages | average |", "|---|---|---|---|"]
    lines += [f"| {item['task']} | {item['dataset']} | {', '.join(item['languages'])} | {100 * item['score']:.2f} |"
              for item in averages]
    return lines
