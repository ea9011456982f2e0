"""Every dataset of every shipped suite, with its FULL class list in its own label order (a skeleton copy
opened by its reader, `skeletons`): the names the suite prompts with (OpenAI's or CLIP_benchmark's, through
`suite.prompt_classnames`) name, label by label, the class CLIP_benchmark's English names give that label;
torchvision reads the same copies to the same label order. And an alignment that cannot match names refuses in
one line instead of trusting a list's order."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from clipmodule.errors import ClipModuleError
from clipmodule.eval.names import DATA, IMAGENET_FULL, SOURCES, align_classnames, classnames_for, dataset_key
from clipmodule.eval.options import TaskSpec
from clipmodule.eval.readers import open_dataset
from clipmodule.eval.tasks.zeroshot import prompt_classnames
from tests.clipmodule.eval import benchmark_labels as labels
from tests.clipmodule.eval.readers.test_torchvision_parity import _peer, no_md5  # noqa: F401 (a fixture)
from tests.clipmodule.eval.skeletons import WRITERS

REPO = Path(__file__).resolve().parents[3]
CLIP_BENCHMARK = json.loads((DATA / "benchmarks" / "clip_benchmark_en_classnames.json").read_text(encoding="utf-8"))
# CLIP_benchmark keeps torchvision's names for these (food101, sun397: "_" and "/" as spaces)
TORCHVISION_NAMES = {"resisc45": labels.RESISC45, "renderedsst2": ["negative", "positive"], "sun397": labels.SUN397,
                     "food101": sorted(labels.FOOD101), "dtd": labels.DTD, "stl10": labels.STL10,
                     "voc2007_multilabel": labels.VOC, "cifar10": labels.CIFAR10, "cifar100": labels.CIFAR100,
                     "fgvc_aircraft": labels.shipped("openai_prompts", "FGVCAircraft")["classes"],
                     "cars": labels.shipped("openai_prompts", "StanfordCars")["classes"]}


def _spelling(name: str) -> str:
    return re.sub(r"[\s_/-]+", " ", name.lower()).strip()


def clip_benchmark_names(name: str) -> list[str]:
    """CLIP_benchmark's English name of each label, in the dataset's label order."""
    key = "imagenet1k" if dataset_key(name) in IMAGENET_FULL else dataset_key(name)
    return list(CLIP_BENCHMARK[key]) if key in CLIP_BENCHMARK else list(TORCHVISION_NAMES[key])


def _suite_rows() -> list[TaskSpec]:
    from clipmodule.eval.cli import parse_command

    rows = []
    for config in sorted((REPO / "experiments" / "benchmarks").glob("*.yaml")):
        rows += parse_command("suite", ["-c", str(config), "--model", "m"]).tasks
    return [row for row in rows if row.task == "zeroshot"]


def test_every_zeroshot_row_of_the_shipped_suites_is_covered_here():
    for row in _suite_rows():
        if str(row.dataset).startswith("builtin:"):
            assert row.templates not in SOURCES  # template files and the builtin sets' own names: nothing to align
        elif str(row.dataset).startswith("wds/"):
            assert row.templates == "clip_benchmark"  # the copy's own classnames.txt, as CLIP_benchmark reads it
        elif classnames_for(row.dataset, row.templates) is None:
            assert dataset_key(row.dataset) in ("imagenet-a", "imagenet-r", "objectnet")  # the reader names them
        else:
            assert dataset_key(row.dataset) in WRITERS, row.dataset


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("name", sorted(WRITERS))
def test_prompted_names_are_each_labels_own_class(tmp_path, name, source):
    WRITERS[name](tmp_path)
    dataset = open_dataset(name, tmp_path)
    prompted = prompt_classnames(TaskSpec("zeroshot", dataset=name, root=str(tmp_path), templates=source), dataset)
    expected = clip_benchmark_names(name)
    assert len(prompted) == len(expected) == len(dataset.classnames)
    wrong = [(label, own, said, meant) for label, (own, said, meant)
             in enumerate(zip(dataset.classnames, prompted, expected))
             if _spelling(said) != _spelling(meant) and (said, meant) not in labels.SAME_CLASS]
    assert not wrong, f"{name}: label, own name, prompted name, CLIP_benchmark's name: {wrong[:5]}"


@pytest.mark.usefixtures("no_md5")
@pytest.mark.parametrize("name", ["eurosat", "country211", "dtd", "sun397", "food101", "renderedsst2", "fgvc_aircraft",
                                  "pets", "cars", "stl10", "cifar10", "cifar100", "flowers"])
def test_own_label_order_is_torchvisions(tmp_path, name):
    """torchvision reads the same skeleton copies to the same class order (Flowers-102: torchvision names its
    labels in English, so the label map's names are checked against it)."""
    WRITERS[name](tmp_path)
    ours = open_dataset(name, tmp_path)
    theirs = list(_peer(name, tmp_path, ours.split).classes)
    if name != "flowers":
        assert [_spelling(name) for name in ours.classnames] == [_spelling(name) for name in theirs]
        return
    for source in SOURCES:
        spec = TaskSpec("zeroshot", dataset=name, root=str(tmp_path), templates=source)
        prompted = prompt_classnames(spec, ours)
        assert all(_spelling(said) == _spelling(meant) or (said, meant) in labels.SAME_CLASS
                   for said, meant in zip(prompted, theirs, strict=True))


def test_eurosat_with_openai_names_each_label_by_its_folder():
    own = list(labels.EUROSAT)  # torchvision.datasets.EuroSAT's label order: the sorted folders
    aligned = align_classnames(own, classnames_for("eurosat", "openai"), "eurosat", dataset="eurosat")
    assert aligned[:3] == ["annual crop land", "forest", "brushland or shrubland"]
    assert aligned[-1] == "lake or sea"


def test_a_list_that_names_do_not_match_is_refused_not_taken_in_its_order():
    own = list(labels.EUROSAT)
    with pytest.raises(ClipModuleError) as error:
        align_classnames(own, classnames_for("eurosat", "openai"), "eurosat")  # no dataset: no label map
    message = str(error.value)
    assert "\n" not in message and message.startswith("eurosat: ") and "'AnnualCrop'" in message
    flowers = classnames_for("flowers")
    with pytest.raises(ClipModuleError, match="'1', '2', '3', '4' and 98 more"):
        align_classnames([str(i) for i in range(1, 103)], flowers, "flowers")
    with pytest.raises(ClipModuleError, match="'Zebra'"):  # a copy with a class the map does not know
        align_classnames(["AnnualCrop", "Zebra"], ["annual crop land", "forest"], "row", dataset="eurosat")
    with pytest.raises(ClipModuleError, match="'b'"):  # two labels taking one name
        align_classnames(["a", "b"], ["a", "a"], "row")


def test_the_label_maps_name_only_listed_classes():
    maps = json.loads((DATA / "benchmarks" / "label_maps.json").read_text(encoding="utf-8"))
    for name, entry in maps.items():
        if name.startswith("_"):
            continue
        listed = {_spelling(item) for source in SOURCES for item in (classnames_for(name, source) or [])}
        assert entry["why"] and {_spelling(named) for named in entry["labels"].values()} <= listed, name
