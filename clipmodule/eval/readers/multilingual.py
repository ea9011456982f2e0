"""Multilingual benchmarks, one split per language (a row's `language`), read from the files as released and laid
out where CLIP_benchmark's builders put them (clip_benchmark/datasets/{xtd10,xtd200,flickr30k_200,crossmodal3600,
babel_imagenet}.py); one caption per image and language, as CLIP_benchmark reads them.

    xtd10            Adobe's XTD10 repository files: XTD10/test_image_names.txt and the captions
                     XTD10/test_1kcaptions_<lang>.txt (MIC/ for de and fr, STAIR/ for jp), or the same files
                     flat in the root; images in xtd10/images/. Languages de en es fr it jp ko pl ru tr zh.
    xtd200           nllb-clip's data/xtd200/: test_image_names.txt and <flores code>.txt; images in xtd200/images/
    flickr30k-200    nllb-clip's data/flickr30k-200/: filenames.txt and <flores code>.txt; images in
                     flickr30k-200/images/ (the index and caption files may sit in the root too)
    crossmodal3600   Google's captions.jsonl ({image/key, <lang>: {caption: [...]}}) and images/<key>.jpg in xm3600/;
                     the 36 languages, each image's first caption
    babel_imagenet   (registered as `imagenet_babel`) ImageNet-1k's val/<wnid>/ (as `imagenet1k`), the classes
                     Babel-ImageNet keeps for the language, their names and the NLLB-translated templates it ships
                     (assets/multilingual/)

Every image the files name must be on disk: a copy with missing images is one line naming the first (where
CLIP_benchmark skips them with a warning, which changes the benchmark).
"""

from __future__ import annotations

import functools
import gzip
import json
from collections.abc import Callable
from pathlib import Path

from clipmodule.errors import ClipModuleError
from clipmodule.eval.readers.base import read_text_lines, register
from clipmodule.eval.readers.imagenet import open_imagenet1k
from clipmodule.eval.readers.items import BenchmarkDataset
from clipmodule.eval.readers.selection import check_listed_images

DATA = Path(__file__).resolve().parents[2] / "assets" / "multilingual"
XTD10_LANGUAGES = ("de", "en", "es", "fr", "it", "jp", "ko", "pl", "ru", "tr", "zh")
XM3600_LANGUAGES = ("ar", "bn", "cs", "da", "de", "el", "en", "es", "fa", "fi", "fil", "fr", "he", "hi", "hr", "hu",
                    "id", "it", "ja", "ko", "mi", "nl", "no", "pl", "pt", "quz", "ro", "ru", "sv", "sw", "te", "th",
                    "tr", "uk", "vi", "zh")


@functools.cache
def flores_languages() -> tuple[str, ...]:
    return tuple(read_text_lines(DATA / "flores_languages.txt"))


@functools.cache
def babel_data(name: str) -> dict:
    """`babel_imagenet` ({LANG: [class indices, names]}) or `nllb_dist13b_prompts` ({LANG: [templates]})."""
    with gzip.open(DATA / f"{name}.json.gz", "rt", encoding="utf-8") as handle:
        return json.load(handle)


def babel_languages() -> tuple[str, ...]:
    return tuple(sorted(code.lower() for code in babel_data("babel_imagenet")))


def _either(*paths: str) -> tuple[str, ...]:
    return paths


def _first(folder: Path, options: tuple[str, ...]) -> Path:
    return next((folder / option for option in options if (folder / option).exists()), folder / options[0])


def _paired(name: str, folder: Path, language: str, index: tuple[str, ...], captions: tuple[str, ...],
            images: tuple[str, ...]) -> BenchmarkDataset:
    """Images named line by line in `index`, captioned by the same line of `captions`."""
    index_file, caption_file, image_dir = _first(folder, index), _first(folder, captions), _first(folder, images)
    names, texts = read_text_lines(index_file), read_text_lines(caption_file)
    if len(names) != len(texts):
        raise ClipModuleError(f"{name} ({language}): {caption_file} has {len(texts)} captions but {index_file} "
                              f"names {len(names)} images")
    paths = [image_dir / image for image in names]
    check_listed_images(f"{name} ({language})", index_file, paths, image_dir)
    return BenchmarkDataset(name, language, "retrieval", [(path, [text]) for path, text in zip(paths, texts)],
                            root=folder)


def _xtd10_captions(language: str) -> tuple[str, ...]:
    folder = {"de": "MIC", "fr": "MIC", "jp": "STAIR"}.get(language, "XTD10")
    return _either(f"{folder}/test_1kcaptions_{language}.txt", f"test_1kcaptions_{language}.txt")


XTD10_INDEX = _either("XTD10/test_image_names.txt", "test_image_names.txt")


@register("xtd10", splits=XTD10_LANGUAGES, by_language=True, metric="recall@1/5/10 both ways",
          expected=lambda language: [XTD10_INDEX, _xtd10_captions(language), _either("xtd10/images", "images")],
          layout="XTD10/test_image_names.txt + <dir>/test_1kcaptions_<lang>.txt + xtd10/images/")
def open_xtd10(folder: Path, language: str) -> BenchmarkDataset:
    return _paired("xtd10", folder, language, XTD10_INDEX, _xtd10_captions(language),
                   _either("xtd10/images", "images"))


def _nllb(name: str, index: str) -> Callable[[Path, str], BenchmarkDataset]:
    def open_nllb(folder: Path, language: str) -> BenchmarkDataset:
        return _paired(name, folder, language, _either(f"{name}/{index}", index),
                       _either(f"{name}/{language}.txt", f"{language}.txt"), _either(f"{name}/images", "images"))

    return open_nllb


for _name, _index in (("xtd200", "test_image_names.txt"), ("flickr30k-200", "filenames.txt")):
    register(_name, splits=flores_languages(), by_language=True, metric="recall@1/5/10 both ways",
             expected=lambda language, name=_name, index=_index: [
                 _either(f"{name}/{index}", index), _either(f"{name}/{language}.txt", f"{language}.txt"),
                 _either(f"{name}/images", "images")],
             layout=f"{_name}/{_index} + {_name}/<flores code>.txt + {_name}/images/")(_nllb(_name, _index))


@register("crossmodal3600", splits=XM3600_LANGUAGES, by_language=True, metric="recall@1/5/10 both ways",
          aliases=("xm3600",), expected=lambda language: [_either("xm3600/captions.jsonl", "captions.jsonl"),
                                                         _either("xm3600/images", "images")],
          layout="xm3600/captions.jsonl + xm3600/images/<key>.jpg")
def open_crossmodal3600(folder: Path, language: str) -> BenchmarkDataset:
    captions = _first(folder, ("xm3600/captions.jsonl", "captions.jsonl"))
    images = _first(folder, ("xm3600/images", "images"))
    items, number = [], 0
    try:
        lines = captions.read_text(encoding="utf-8").splitlines()
        for number, line in enumerate(lines, start=1):  # noqa: B007 (the line an error names)
            if line.strip():
                entry = json.loads(line)
                items.append((images / f"{entry['image/key']}.jpg", [entry[language]["caption"][0]]))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise ClipModuleError(f"{captions}: unreadable JSON lines ({str(error).splitlines()[0][:120]})") from None
    except (KeyError, TypeError, IndexError):
        raise ClipModuleError(f"{captions}:{number}: no {language!r} caption (expected {{image/key, "
                              f"{language}: {{caption: [...]}}}})") from None
    check_listed_images(f"crossmodal3600 ({language})", captions, [path for path, _ in items], images)
    return BenchmarkDataset("crossmodal3600", language, "retrieval", items, root=folder)


@register("imagenet_babel", aliases=("babel_imagenet",), splits=babel_languages(), by_language=True,
          expected=lambda language: ["val"],
          layout="val/<wnid>/*.JPEG (ImageNet-1k's) + the language's Babel-ImageNet classes and templates")
def open_babel_imagenet(folder: Path, language: str) -> BenchmarkDataset:
    indices, names = babel_data("babel_imagenet")[language.upper()]
    templates = babel_data("nllb_dist13b_prompts")[language.upper()]
    position = {index: new for new, index in enumerate(indices)}
    imagenet = open_imagenet1k(folder, "test")
    items = [(path, position[label]) for path, label in imagenet.items if label in position]
    return BenchmarkDataset("babel_imagenet", language, "zeroshot_classification", items, list(names), folder,
                            templates=list(templates))
