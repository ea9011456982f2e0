"""Class names and prompt templates of the benchmark datasets, by dataset name, from the data files shipped in
clipmodule/assets/benchmarks/ (NOTICE.txt there says where each came from):

    source "openai"          the CLIP paper's: OpenAI's data/prompts.md (26 datasets) and its ImageNet notebook
                             (the 80 templates, also used for ImageNet's shifted test sets)
    source "clip_benchmark"  CLIP_benchmark's English lists; like CLIP_benchmark, a dataset without templates
                             of its own takes ImageNet's, and one without class names keeps the dataset's own

Dataset names are CLIP_benchmark's (`cifar10`, `flowers`, `pets`, `imagenet-a`, `mscoco_captions`…); the common
other spellings (`flowers102`, `oxford_pets`, `ImageNet-A`, `vtab/cifar10`, `wds/imagenet1k`) name the same one.

`align_classnames` puts a shipped list in the order of a dataset's own labels, by name or by the explicit label
map of `label_maps.json` (EuroSAT's folders, Flowers-102's numbers, Country211's codes…); it refuses a list it
cannot match name by name rather than trust the list's order (OpenAI's EuroSAT list is in another order).
Kept free of torch.
"""

from __future__ import annotations

import functools
import json
import re
from collections import Counter
from pathlib import Path

from clipmodule.errors import ClipModuleError
from clipmodule.eval.prompts import Prompts

DATA = Path(__file__).resolve().parents[1] / "assets"
SOURCES = ("openai", "clip_benchmark")

# OpenAI's section titles in data/prompts.md, by the dataset name used here.
OPENAI_SECTIONS = {
    "birdsnap": "Birdsnap", "cifar10": "CIFAR10", "cifar100": "CIFAR100", "clevr_count_all": "CLEVRCounts",
    "caltech101": "Caltech101", "country211": "Country211", "dtd": "DescribableTextures", "eurosat": "EuroSAT",
    "fgvc_aircraft": "FGVCAircraft", "fer2013": "FacialEmotionRecognition2013", "flowers": "Flowers102",
    "food101": "Food101", "gtsrb": "GTSRB", "hateful_memes": "HatefulMemes",
    "kitti_closest_vehicle_distance": "KITTI", "kinetics700": "Kinetics700", "mnist": "MNIST", "pets": "OxfordPets",
    "voc2007": "PascalVOC2007", "voc2007_multilabel": "PascalVOC2007", "pcam": "PatchCamelyon",
    "resisc45": "RESISC45", "renderedsst2": "SST2",
    "stl10": "STL10", "sun397": "SUN397", "cars": "StanfordCars", "ucf101": "UCF101",
}
# ImageNet and the test sets that share its 1000 classes in its order; the subsets (A, R, O, ObjectNet) share
# its templates only: their readers give the subset's names.
IMAGENET_FULL = ("imagenet1k", "imagenetv2", "imagenet_sketch")
IMAGENET_SUBSETS = ("imagenet-a", "imagenet-r", "imagenet-o", "objectnet")
RETRIEVAL = ("flickr8k", "flickr30k", "mscoco_captions")
SELECTION = ("sugar_crepe/add_att", "sugar_crepe/add_obj", "sugar_crepe/replace_att", "sugar_crepe/replace_obj",
             "sugar_crepe/replace_rel", "sugar_crepe/swap_att", "sugar_crepe/swap_obj", "winoground", "vg_relation",
             "vg_attribution")
MULTILINGUAL = ("xtd10", "xtd200", "flickr30k-200", "crossmodal3600", "imagenet_babel")
CANONICAL = (*OPENAI_SECTIONS, *IMAGENET_FULL, *IMAGENET_SUBSETS, *RETRIEVAL, *SELECTION, *MULTILINGUAL,
             "caltech101_vtab", "svhn",
             "clevr_closest_object_distance", "dmlab", "diabetic_retinopathy", "smallnorb_label_azimuth",
             "smallnorb_label_elevation", "dsprites_label_x_position", "dsprites_label_y_position",
             "dsprites_label_orientation",
             # DataComp's WILDS, fairness and association tasks (mlfoundations/datacomp tasklist.yml)
             "wilds/iwildcam", "wilds/camelyon17", "wilds/fmow", "dollar_street", "geode", "fairface", "utkface",
             "winogavil")
ALIASES = {
    "imagenet": "imagenet1k", "in1k": "imagenet1k", "imagenetsketch": "imagenet_sketch", "sketch": "imagenet_sketch",
    "flowers102": "flowers", "oxfordflowers102": "flowers", "oxfordflowers": "flowers", "oxfordpets": "pets",
    "oxfordiiitpet": "pets", "oxfordiiitpets": "pets", "stanfordcars": "cars", "aircraft": "fgvc_aircraft",
    "fgvcaircraft": "fgvc_aircraft", "describabletextures": "dtd", "patchcamelyon": "pcam", "sst2": "renderedsst2",
    "pascalvoc2007": "voc2007", "mscoco": "mscoco_captions", "coco": "mscoco_captions", "flickr": "flickr30k",
    "facialemotionrecognition2013": "fer2013", "kitti": "kitti_closest_vehicle_distance",
    "clevrcount": "clevr_count_all", "clevrcounts": "clevr_count_all",
    "clevrdistance": "clevr_closest_object_distance", "country": "country211",
    # DataComp's retrieval task names
    "iwildcam": "wilds/iwildcam", "camelyon17": "wilds/camelyon17", "fmow": "wilds/fmow",
    "flickr1ktestimagetextretrieval": "flickr30k", "mscoco20145ktestimagetextretrieval": "mscoco_captions",
    "babelimagenet": "imagenet_babel", "xm3600": "crossmodal3600",
}


def _squash(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


_BY_SQUASHED = {**{_squash(name): name for name in CANONICAL}, **ALIASES}


def dataset_key(name: str) -> str | None:
    """The dataset name used here for `name` (any case, `-`/`_`/space, a `vtab/` `wds/` `tfds/` prefix or DataComp's
    `fairness/` `misc/` `retrieval/`; WILDS's sets are `wilds/<name>`, as DataComp names them), or None."""
    prefixed = re.match(r"^(vtab|wds|tfds|fairness|misc|retrieval)/", name.strip())
    short = name.strip().split("/")[-1] if prefixed else name.strip()
    return _BY_SQUASHED.get(_squash(short))


def _check_source(source: str) -> None:
    if source not in SOURCES:
        raise ClipModuleError(f"unknown source of class names/templates {source!r} (one of {', '.join(SOURCES)})")


@functools.cache
def _json(name: str) -> dict:
    return json.loads((DATA / "benchmarks" / name).read_text(encoding="utf-8"))


@functools.cache
def _imagenet(kind: str) -> tuple[str, ...]:
    lines = (DATA / f"imagenet_{kind}.txt").read_text(encoding="utf-8").splitlines()
    return tuple(line.strip() for line in lines if line.strip())


def _openai_entry(key: str) -> dict | None:
    section = OPENAI_SECTIONS.get(key)
    return _json("openai_prompts.json")[section] if section else None


def _first(name: str | list[str]) -> str:
    return name[0] if isinstance(name, list) else name


def classnames_for(name: str, source: str = "openai") -> list[str] | None:
    """The class names `source` gives the dataset `name`, in its label order, or None when it gives none
    (the dataset's own names are then used; the ImageNet subsets' readers give theirs). Where OpenAI lists
    synonyms for a class (FER2013), the first is the class's name and `templates_for` uses them all."""
    _check_source(source)
    key = dataset_key(name)
    if key in IMAGENET_FULL:
        return list(_imagenet("classnames"))
    if source == "openai":
        entry = _openai_entry(key)
        return [_first(item) for item in entry["classes"]] if entry else None
    names = _json("clip_benchmark_en_classnames.json")
    return list(names[key]) if key in names else None


def templates_for(name: str, source: str = "openai") -> Prompts:
    """The prompt templates (`{}` or `{c}`) `source` gives the dataset `name`; for OpenAI's FER2013 a dict
    {class: [prompts]} that spells each class with every synonym the paper used. A dataset `source` has no
    templates for is a one-line error (CLIP_benchmark's fallback to ImageNet's is kept for its own datasets)."""
    _check_source(source)
    key = dataset_key(name)
    if key in IMAGENET_FULL or key in IMAGENET_SUBSETS:
        return list(_imagenet("templates"))
    if source == "openai":
        entry = _openai_entry(key)
        if entry is None:
            raise ClipModuleError(f"{name}: OpenAI's prompts.md has no templates for this dataset "
                                  f"(it has {', '.join(sorted(OPENAI_SECTIONS))} and ImageNet's test sets)")
        if any(isinstance(item, list) for item in entry["classes"]):
            return {_first(item): [template.format(synonym) for synonym in (item if isinstance(item, list) else [item])
                                   for template in entry["templates"]] for item in entry["classes"]}
        return list(entry["templates"])
    templates = _json("clip_benchmark_en_zeroshot_classification_templates.json")
    if key is None:
        raise ClipModuleError(f"{name}: not a dataset CLIP_benchmark names; pass a template file")
    return list(templates.get(key, templates["imagenet1k"]))


def _normal(name: str) -> str:
    return re.sub(r"[\s_/-]+", " ", name.lower()).strip()


@functools.cache
def label_map(name: str | None) -> dict[str, str]:
    """{own label name: the name the shipped lists give it} of the dataset `name`, from `label_maps.json`
    (normalised, as `align_classnames` compares names); {} for a dataset whose own names are the lists'."""
    entry = _json("label_maps.json").get(dataset_key(name) if name else None)
    return {_normal(own): _normal(named) for own, named in entry["labels"].items()} if entry else {}


def _listed(names: list[str], max_count: int = 4) -> str:
    more = f" and {len(names) - max_count} more" if len(names) > max_count else ""
    return ", ".join(repr(name) for name in names[:max_count]) + more


def align_classnames(own: list[str], named: list[str], where: str, dataset: str | None = None) -> list[str]:
    """`named` (a shipped list: OpenAI's or CLIP_benchmark's) in the order of the dataset's `own` label names.

    Each own label takes the one listed name equal to its own, or to the name `label_map(dataset)` gives it
    (EuroSAT's `AnnualCrop` is OpenAI's "annual crop land"; Flowers-102's `1` is "pink primrose"), compared
    after lower-casing and `_`/`-`/`/` to spaces. A label that matches no name or several, or two labels taking
    one name, is a one-line error naming them: a list in its own order is never taken on trust, since a wrong
    order gives every class another class's prompts and no error anywhere else."""
    if len(own) != len(named):
        raise ClipModuleError(f"{where}: the dataset has {len(own)} classes but the class-name list has "
                              f"{len(named)}; give a class-name file (--classnames)")
    if [_normal(name) for name in own] == [_normal(name) for name in named]:
        return list(named)  # the same names in the same order (ImageNet's list names two classes alike twice)
    index: dict[str, list[int]] = {}
    for position, name in enumerate(named):
        index.setdefault(_normal(name), []).append(position)
    extra = label_map(dataset)
    positions = []
    for name in own:
        mine = _normal(name)
        hits = {hit for key in (mine, extra.get(mine, mine)) for hit in index.get(key, [])}
        positions.append(hits.pop() if len(hits) == 1 else None)
    taken = Counter(position for position in positions if position is not None)
    unmatched = [name for name, position in zip(own, positions) if position is None or taken[position] > 1]
    if unmatched:
        unused = [name for position, name in enumerate(named) if taken[position] != 1]
        raise ClipModuleError(
            f"{where}: the class-name list for {dataset or 'this dataset'} names no single class for the dataset's "
            f"own label(s) {_listed(unmatched)} (left in the list: {_listed(unused) or 'none'}); the label map "
            "(clipmodule/assets/benchmarks/label_maps.json) does not cover this copy: give a class-name file "
            "(--classnames) in its label order")
    return [named[position] for position in positions]
