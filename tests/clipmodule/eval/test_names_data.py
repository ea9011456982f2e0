"""Class names and templates as data (clipmodule/assets/benchmarks/): looked up by dataset name and source,
every shipped list usable as prompts, the CLIP_benchmark files equal to the installed package's, and data
names put in the order of a dataset's own labels."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clipmodule.errors import ClipModuleError
from clipmodule.eval.names import (
    DATA,
    OPENAI_SECTIONS,
    SOURCES,
    align_classnames,
    classnames_for,
    dataset_key,
    templates_for,
)
from clipmodule.eval.prompts import class_prompts

REPO = Path(__file__).resolve().parents[3]


def test_the_papers_cifar10_names_and_18_templates():
    assert classnames_for("cifar10") == ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                                         "ship", "truck"]
    templates = templates_for("cifar10")
    assert len(templates) == 18 and templates[0] == "a photo of a {}."
    assert class_prompts(["cat"], templates)[0][0] == "a photo of a cat."


@pytest.mark.parametrize("source", SOURCES)
def test_every_shipped_list_makes_prompts_for_its_classes(source):
    for name in [*OPENAI_SECTIONS, "imagenet1k", "imagenet-r", "svhn", "cars"]:
        try:
            templates = templates_for(name, source)
        except ClipModuleError as error:
            assert source == "openai" and "prompts.md has no templates" in str(error)
            continue
        names = classnames_for(name, source) or ["some class"]
        if isinstance(templates, dict):
            assert list(templates) == names
        prompts = class_prompts(names, templates, name)
        assert len(prompts) == len(names) and all(prompts) and not any("{" in p for ps in prompts for p in ps)


def test_fer2013_spells_each_class_with_the_papers_synonyms():
    names = classnames_for("FER2013")
    assert names == ["angry", "disgusted", "fearful", "happy", "sad", "surprised", "neutral"]
    prompts = dict(zip(names, class_prompts(names, templates_for("fer2013"))))
    assert "a photo of a smiling looking face." in prompts["happy"] and len(prompts["happy"]) == 2 * 6
    assert len(prompts["angry"]) == 6


@pytest.mark.parametrize(("spelling", "key"), [("Flowers102", "flowers"), ("vtab/flowers", "flowers"),
                                               ("oxford_iiit_pet", "pets"), ("ImageNet-A", "imagenet-a"),
                                               ("wds/imagenet1k", "imagenet1k"), ("imagenet", "imagenet1k"),
                                               ("Stanford Cars", "cars"), ("mscoco", "mscoco_captions")])
def test_other_spellings_name_the_same_dataset(spelling, key):
    assert dataset_key(spelling) == key
    assert templates_for(spelling, "clip_benchmark") == templates_for(key, "clip_benchmark")


def test_clip_benchmark_source_falls_back_like_clip_benchmark():
    imagenet = templates_for("imagenet1k", "clip_benchmark")
    assert len(imagenet) == 80 and templates_for("imagenet-r", "clip_benchmark") == imagenet
    assert templates_for("objectnet", "openai") == imagenet  # the paper's 80, in the notebook's {} spelling
    assert templates_for("flowers", "clip_benchmark") == ["a photo of a {c}, a type of flower."]
    assert classnames_for("cifar10", "clip_benchmark") is None  # CLIP_benchmark keeps torchvision's names
    assert len(classnames_for("imagenetv2", "clip_benchmark")) == 1000
    assert classnames_for("imagenet-a") is None  # a 200-class subset: its reader names it


def test_unknown_source_or_dataset_is_one_line():
    with pytest.raises(ClipModuleError, match="unknown source of class names/templates 'laion'"):
        classnames_for("cifar10", "laion")
    with pytest.raises(ClipModuleError, match="not-a-set: OpenAI's prompts.md has no templates"):
        templates_for("not-a-set")
    with pytest.raises(ClipModuleError, match="not a dataset CLIP_benchmark names"):
        templates_for("not-a-set", "clip_benchmark")


def test_clip_benchmark_files_equal_the_installed_packages():
    datasets = pytest.importorskip("clip_benchmark.datasets")
    folder = Path(datasets.__file__).parent
    for ours, theirs in (("clip_benchmark_en_classnames.json", "en_classnames.json"),
                         ("clip_benchmark_en_zeroshot_classification_templates.json",
                          "en_zeroshot_classification_templates.json")):
        assert json.loads((DATA / "benchmarks" / ours).read_text()) == json.loads((folder / theirs).read_text())


def test_data_names_follow_the_datasets_own_label_order():
    # FER2013's folders (Kaggle) sort alphabetically; the paper's list is in the CSV's label order.
    folders = ["angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"]
    assert align_classnames(folders, classnames_for("fer2013"), "fer2013", dataset="fer2013") == [
        "angry", "disgusted", "fearful", "happy", "neutral", "sad", "surprised"]
    flowers = classnames_for("flowers")  # label numbers take their names from the explicit label map
    assert align_classnames([str(i) for i in range(1, 103)], flowers, "flowers", dataset="flowers") == flowers
    cifar = classnames_for("cifar100")  # "sea" and "seal": names match whole, never by prefix
    assert align_classnames(sorted(cifar), cifar, "cifar100") == sorted(cifar)
    with pytest.raises(ClipModuleError, match="the dataset has 3 classes but the class-name list has 10"):
        align_classnames(["a", "b", "c"], classnames_for("mnist"), "mnist")
    with pytest.raises(ClipModuleError, match="own label.s. 'disgust', 'fear', 'surprise'"):  # no map, no prefixes
        align_classnames(folders, classnames_for("fer2013"), "fer2013")


def test_the_data_ships_as_package_data_with_its_notice():
    import tomllib

    package_data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert "assets/benchmarks/*" in package_data["clipmodule"]
    notice = (DATA / "benchmarks" / "NOTICE.txt").read_text()
    assert notice.count("MIT License") == 2 and "Copyright (c) 2021 OpenAI" in notice
    assert "Copyright (c) 2022, Mehdi Cherti" in notice


def test_shipped_suites_parse_and_name_datasets_the_readers_know():
    from clipmodule.eval.cli import parse_command
    from clipmodule.eval.groups import GROUPS
    from clipmodule.eval.readers import known_datasets
    from clipmodule.eval.suite import preflight

    known = set(known_datasets())
    assert {dataset_key(name) for name in known - {"wds"}} == known - {"wds"}  # one spelling for both modules
    counts = {}
    for name in ("clip_paper", "clip_benchmark"):
        config = REPO / "experiments" / "benchmarks" / f"{name}.yaml"
        suite = parse_command("suite", ["-c", str(config), "--model", "m"])
        for task in suite.tasks:
            preflight(task)  # templates and class names resolve for every row before any data is read
            short = task.dataset.removeprefix("wds/")
            assert dataset_key(short) is not None, task.dataset
            assert task.dataset.startswith("wds/") or task.dataset in known
        counts[name] = len(suite.tasks)
    assert counts == {"clip_paper": 26, "clip_benchmark": 39}
    assert all(dataset_key(member) for members in GROUPS.values() for member in members)
