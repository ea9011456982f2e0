"""Evaluation in other languages: CLIP_benchmark's class names and templates per language (the same lists its
`build_dataset` takes for `--language`), Babel-ImageNet's classes, the multilingual retrieval sets read from their
release layouts, one suite row per language and their average, and one-line errors for a wrong language."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from clipmodule.errors import ClipModuleError
from clipmodule.eval.groups import main_metric
from clipmodule.eval.languages import expand_languages, language_averages, language_metrics, shipped_languages
from clipmodule.eval.options import LoaderOptions, SuiteConfig, TaskSpec
from clipmodule.eval.readers import open_dataset
from clipmodule.eval.suite import markdown_table, open_data, preflight, run_suite
from clipmodule.eval.tasks.zeroshot import prompt_classnames, prompt_templates
from clipmodule.models import create_model
from clipmodule.transforms import image_transform
from tests.clipmodule.eval.readers.multilingual_copies import (
    write_imagenet_val,
    write_nllb,
    write_xm3600,
    write_xtd10,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py
CLIP_BENCHMARK = pytest.importorskip("clip_benchmark.datasets.builder")
PACKAGE = Path(CLIP_BENCHMARK.__file__).parent


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return create_model("tiny-vit").eval()


def _preprocess(model):
    return image_transform(model.config.vision.image_size)


@pytest.mark.parametrize("language", ["ar", "cn", "it", "jp"])
def test_imagenet_names_and_templates_equal_clip_benchmarks_for_each_language(tmp_path, language):
    write_imagenet_val(tmp_path, ["n01440764", "n01443537"])
    spec = TaskSpec("zeroshot", dataset="imagenet1k", root=str(tmp_path), templates="clip_benchmark",
                    language=language)
    preflight(spec)
    dataset = open_data(spec, lambda image: image)[0]
    names = json.loads((PACKAGE / f"{language}_classnames.json").read_text(encoding="utf-8"))["imagenet1k"]
    templates = json.loads((PACKAGE / f"{language}_zeroshot_classification_templates.json").read_text("utf-8"))
    assert prompt_classnames(spec, dataset) == names and len(names) == 1000
    assert prompt_templates(spec, dataset) == templates["imagenet1k"]
    assert shipped_languages() == ["ar", "cn", "en", "it", "jp"]


def test_babel_imagenet_keeps_the_languages_classes(tmp_path, model):
    write_imagenet_val(tmp_path, ["n01440764", "n01443537", "n01514859"])  # the third is not among German's
    spec = TaskSpec("zeroshot", dataset="babel_imagenet", root=str(tmp_path), templates="clip_benchmark",
                    language="de")
    preflight(spec)
    dataset = open_data(spec, _preprocess(model))[0]
    babel = json.loads((PACKAGE / "babel_imagenet.json").read_text(encoding="utf-8"))["DE"]
    prompts = json.loads((PACKAGE / "nllb_dist13b_prompts.json").read_text(encoding="utf-8"))["DE"]
    assert dataset.labels() == [0, 0, 1, 1] and prompt_classnames(spec, dataset) == babel[1]
    assert prompt_templates(spec, dataset) == prompts and prompt_classnames(spec, dataset)[:2] == ["Schleie",
                                                                                                    "Goldfisch"]
    assert len(prompts) * len(babel[1]) > 10_000  # a zero-shot run embeds them all: too slow for a unit test


def test_multilingual_retrieval_sets_read_their_release_layouts(tmp_path):
    write_xtd10(tmp_path / "xtd")
    german = open_dataset("xtd10", tmp_path / "xtd", "de")
    assert german.labels()[1] == ["ein green Quadrat"] and german.items[0][0].parent.name == "images"
    assert open_dataset("xtd10", tmp_path / "xtd", "jp").labels()[0] == ["redの四角"]
    write_nllb(tmp_path / "nllb", "xtd200")
    write_nllb(tmp_path / "nllb", "flickr30k-200")
    assert open_dataset("flickr30k-200", tmp_path / "nllb", "zho_Hans").labels()[2] == ["blue的方块"]
    assert len(open_dataset("xtd200", tmp_path / "nllb", "deu_Latn")) == 5
    write_xm3600(tmp_path / "xm")
    filipino = open_dataset("crossmodal3600", tmp_path / "xm", "fil")
    assert filipino.labels()[0] == ["isang red na parisukat"]  # the first caption, as CLIP_benchmark takes


def test_a_suite_row_per_language_and_their_average(tmp_path, model):
    write_xtd10(tmp_path)
    rows = [TaskSpec("retrieval", dataset="xtd10", root=str(tmp_path), language="en,de,jp", recall_at=[1, 5])]
    assert [spec.label() for spec in expand_languages(rows)] == ["retrieval:xtd10:en", "retrieval:xtd10:de",
                                                                 "retrieval:xtd10:jp"]
    config = SuiteConfig(tasks=rows, loader=LoaderOptions(num_workers=0, batch_size=8))
    run = run_suite(model, _preprocess(model), config, store=None, say=lambda line: None)
    assert [row["spec"]["language"] for row in run.rows] == ["en", "de", "jp"]
    scores = [(row["metrics"]["image_to_text_R@1"] + row["metrics"]["text_to_image_R@1"]) / 2 for row in run.rows]
    table = markdown_table(run.rows, "xtd10")
    assert "Averages over languages" in table
    assert f"| retrieval | xtd10 | de, en, jp | {100 * sum(scores) / 3:.2f} |" in table
    averages = language_averages(run.rows, main_metric)  # what the suite's record and MLflow run keep
    assert language_metrics(averages) == {"avg_languages/retrieval/xtd10": pytest.approx(sum(scores) / 3)}


def test_a_wrong_language_is_one_line(tmp_path):
    write_imagenet_val(tmp_path, ["n01440764"])
    write_xtd10(tmp_path)
    cases = [
        (TaskSpec("zeroshot", dataset="imagenet1k", root=str(tmp_path), templates="clip_benchmark", language="xx"),
         r"^language 'xx': CLIP_benchmark ships no class names or templates in it \(languages: ar, cn, en, it, jp\)$"),
        (TaskSpec("zeroshot", dataset="cifar10", root=str(tmp_path), templates="clip_benchmark", language="it"),
         r"^cifar10: CLIP_benchmark ships it class names and templates only for imagenet1k; give a class-name"),
        (TaskSpec("zeroshot", dataset="imagenet1k", root=str(tmp_path), templates="openai", language="de"),
         r"openai prompts are English; language 'de' takes CLIP_benchmark's"),
        (TaskSpec("zeroshot", dataset=str(tmp_path / "val"), language="de"),
         r"imagenet prompts are English; language 'de' takes CLIP_benchmark's"),
        (TaskSpec("retrieval", dataset="xtd10", root=str(tmp_path), language="xx"),
         r"^xtd10: no language 'xx' \(languages: de, en, es, fr, it, jp, ko, pl, ru, tr, zh\)$"),
        (TaskSpec("retrieval", dataset="xtd10", root=str(tmp_path), language="fr"),
         r"^xtd10 \(fr\): .* is missing MIC/test_1kcaptions_fr.txt or test_1kcaptions_fr.txt"),
        (TaskSpec("retrieval", dataset="flickr30k", root=str(tmp_path), language="de"),
         r"flickr30k is not released per language; language 'de' applies to xtd10"),
    ]
    for spec, message in cases:
        with pytest.raises(ClipModuleError, match=message):
            preflight(spec)
            open_data(spec, lambda image: image)
    (tmp_path / "xtd10" / "images" / "COCO_val2014_000000000003.jpg").unlink()
    with pytest.raises(ClipModuleError, match=r"^xtd10 \(de\): 1 of 6 images named in test_image_names.txt are "
                                              r"missing from .*xtd10/images \(first: COCO_val2014_000000000003.jpg\)$"):
        open_dataset("xtd10", tmp_path, "de")
    write_xm3600(tmp_path / "xm", languages=("en",))
    with pytest.raises(ClipModuleError, match=r"captions.jsonl:1: no 'de' caption"):
        open_dataset("crossmodal3600", tmp_path / "xm", "de")


def test_the_shipped_suite_parses_and_every_row_preflights():
    from clipmodule.eval.cli import parse_command

    config = Path(__file__).resolve().parents[3] / "experiments" / "benchmarks" / "beyond_classification.yaml"
    suite = parse_command("suite", ["-c", str(config), "--model", "m"])
    rows = expand_languages(suite.tasks)
    for spec in rows:
        preflight(spec)
    tasks = {spec.task for spec in rows}
    assert tasks == {"image_caption_selection", "retrieval", "zeroshot", "linear-probe"} and len(rows) == 34


def test_a_model_with_its_own_multilingual_tokenizer_reads_each_language(tmp_path):
    pytest.importorskip("sentencepiece")
    from clipmodule.eval.tasks import model_tokenizer
    from tests.clipmodule.eval.readers.multilingual_copies import _captions
    from tests.clipmodule.spm import make_spm_tokenizer

    write_xtd10(tmp_path / "xtd")
    corpus = [caption for language in ("en", "de", "jp") for caption in _captions(language, 6)]
    folder = make_spm_tokenizer(tmp_path / "spm", corpus * 3, vocab_size=60)
    torch.manual_seed(0)
    model = create_model("tiny-vit", text={"tokenizer": "hf:test/spm", "tokenizer_clean": "canonicalize",
                                           "vocab_size": 64, "pool": "last", "causal": False, "context_length": 16})
    model.tokenizer_folder = folder
    ids = model_tokenizer(model)(_captions("jp", 2))
    assert int((ids == 2).sum()) == 0  # no <unk>: the model's sentencepiece vocabulary, not OpenAI's BPE
    rows = [TaskSpec("retrieval", dataset="xtd10", root=str(tmp_path / "xtd"), language="de,jp", recall_at=[1])]
    run = run_suite(model, _preprocess(model), SuiteConfig(tasks=rows, loader=LoaderOptions(num_workers=0)),
                    store=None, say=lambda line: None)
    assert [row["metrics"]["num_captions"] for row in run.rows] == [6, 6]
