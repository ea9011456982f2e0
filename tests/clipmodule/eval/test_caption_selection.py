"""Image-caption selection (SugarCrepe, Winoground, ARO) equals CLIP_benchmark's own metric code: its `evaluate`
over its own SugarCrepe reader on the same files, and over the same items for Winoground and ARO; ARO's macro
accuracy equals the formula of ARO's dataset_zoo/aro_datasets.py (`evaluate_scores`) and its notebook; the kind
runs in a suite and from the CLI; bad copies are one line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from clipmodule.checkpoints.io import save_checkpoint
from clipmodule.cli import main as clipmodule
from clipmodule.errors import ClipModuleError
from clipmodule.eval.options import LoaderOptions, SuiteConfig, TaskSpec
from clipmodule.eval.readers import open_dataset
from clipmodule.eval.suite import run_suite, table_cells
from clipmodule.eval.tasks import model_tokenizer
from clipmodule.eval.tasks.caption_selection import (
    aro_excluded_relations,
    aro_macro_accuracy,
    image_caption_selection,
    selection_metrics,
)
from clipmodule.models import create_model
from clipmodule.transforms import image_transform
from tests.clipmodule.eval.readers.selection_copies import write_aro, write_sugar_crepe, write_winoground

ics = pytest.importorskip("clip_benchmark.metrics.image_caption_selection")
pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return create_model("tiny-vit").eval()


def _preprocess(model):
    return image_transform(model.config.vision.image_size)


def _clip_benchmark(model, dataset) -> dict[str, float]:
    from clip_benchmark.datasets.builder import image_captions_collate_fn

    loader = torch.utils.data.DataLoader(dataset, batch_size=4, collate_fn=image_captions_collate_fn)
    return ics.evaluate(model, loader, model_tokenizer(model), device="cpu", amp=False)


class Encoded(torch.nn.Module):
    """Pre-computed embeddings behind CLIP_benchmark's model interface: an "image" or "text" is its row index."""

    def __init__(self, image: torch.Tensor, text: torch.Tensor):
        super().__init__()
        self.image, self.text = image, text

    def encode_image(self, index):
        return self.image.flatten(0, 1)[index.view(-1).long()]

    def encode_text(self, index):
        return self.text.flatten(0, 1)[index.long()]


def test_metrics_equal_clip_benchmarks_on_random_embeddings():
    generator = torch.Generator().manual_seed(0)
    for images, texts in ((2, 2), (1, 2), (1, 5)):
        image = torch.nn.functional.normalize(torch.randn(50, images, 8, generator=generator), dim=-1)
        text = torch.nn.functional.normalize(torch.randn(50, texts, 8, generator=generator), dim=-1)

        batches = [(torch.arange(i * images, (i + 1) * images).view(1, images, 1, 1, 1).float(),
                    [list(range(i * texts, (i + 1) * texts))]) for i in range(50)]
        expected = ics.evaluate(Encoded(image, text), batches, lambda ids: torch.tensor(ids), device="cpu", amp=False)
        ours = selection_metrics(image, text)
        assert {key: ours[key] for key in ("text_acc", "image_acc", "acc")} == pytest.approx(expected, abs=1e-7)
        assert 0 < ours["text_acc"] < 1


def test_sugar_crepe_equals_clip_benchmarks_reader_and_metric(tmp_path, model):
    from clip_benchmark.datasets.sugar_crepe import SugarCrepe

    write_sugar_crepe(tmp_path, subsets=("add_att", "swap_obj"), per_subset=9)
    for subset in ("add_att", "swap_obj"):
        dataset = open_dataset(f"sugar_crepe/{subset}", tmp_path).with_transform(_preprocess(model))
        ours = image_caption_selection(model, dataset, LoaderOptions(batch_size=4, num_workers=0))
        theirs = SugarCrepe(str(tmp_path / "val2017"), str(tmp_path / "data" / f"{subset}.json"), _preprocess(model))
        expected = _clip_benchmark(model, theirs)
        assert {key: ours[key] for key in expected} == pytest.approx(expected, abs=1e-6)
        assert ours["num_samples"] == 9 and ours["image_acc"] == 1.0 and ours["acc"] == ours["text_acc"]
    encoded = []
    encode_image = model.encode_image
    with pytest.MonkeyPatch.context() as patch:  # 9 entries name 6 COCO images: each is encoded once
        patch.setattr(model, "encode_image", lambda images, **kw: encoded.append(len(images)) or encode_image(
            images, **kw))
        image_caption_selection(model, dataset, LoaderOptions(batch_size=4, num_workers=0))
    assert sum(encoded) == 6


def test_winoground_and_aro_equal_clip_benchmarks_metric(tmp_path, model):
    write_winoground(tmp_path / "winoground")
    dataset = open_dataset("winoground", tmp_path).with_transform(_preprocess(model))
    assert dataset[0][0].shape[0] == 2
    ours = image_caption_selection(model, dataset, LoaderOptions(batch_size=2, num_workers=0))
    expected = _clip_benchmark(model, dataset)
    assert {key: ours[key] for key in expected} == pytest.approx(expected, abs=1e-6)
    write_aro(tmp_path / "aro")
    relation = open_dataset("vg_relation", tmp_path).with_transform(_preprocess(model))
    ours = image_caption_selection(model, relation, LoaderOptions(batch_size=3, num_workers=0))
    assert ours["text_acc"] == pytest.approx(_clip_benchmark(model, relation)["text_acc"], abs=1e-6)
    assert "macro_acc" in ours  # 'on', 'under', 'holding' are averaged, 'next to' is excluded


def aro_reference(scores_false_true: np.ndarray, groups: list[str], relation: bool) -> float:
    """ARO's macro accuracy as dataset_zoo/aro_datasets.py computes it (captions [false, true], argmax over
    them, the true one is index 1), relation groups filtered by the notebook's symmetric list, attribute pairs
    by `Count < 25`, then the mean of the groups' accuracies."""
    correct = np.argmax(scores_false_true, axis=-1) == 1
    names = np.array(groups)
    records = [(group, correct[names == group].mean(), (names == group).sum()) for group in np.unique(names)]
    if relation:
        kept = [accuracy for group, accuracy, _ in records if group not in aro_excluded_relations()]
    else:
        kept = [accuracy for _, accuracy, count in records if count >= 25]
    return float(np.mean(kept))


def test_aro_macro_accuracy_equals_aros_formula():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(400, 2))
    relations = list(rng.choice(["on", "under", "holding", "next to", "with", "behind"], 400))
    attributes = list(rng.choice(["red_white", "big_small", "wet_dry", "rare_one"], 400, p=[0.4, 0.3, 0.28, 0.02]))
    correct = (scores[:, 1] > scores[:, 0]).tolist()  # ours: true caption first, theirs second
    assert aro_macro_accuracy("vg_relation", correct, relations) == pytest.approx(
        aro_reference(scores, relations, relation=True), abs=1e-12)
    assert aro_macro_accuracy("vg_attribution", correct, attributes) == pytest.approx(
        aro_reference(scores, attributes, relation=False), abs=1e-12)
    assert {"next to", "with", "by"} <= aro_excluded_relations() and "on" not in aro_excluded_relations()
    assert aro_macro_accuracy("vg_attribution", correct[:10], attributes[:10]) is None  # no pair seen 25 times


def test_a_suite_runs_every_set_and_tabulates_text_image_group(tmp_path, model):
    write_sugar_crepe(tmp_path, subsets=("replace_rel",))
    write_winoground(tmp_path / "winoground")
    write_aro(tmp_path / "aro")
    rows = [TaskSpec("image_caption_selection", dataset=name, root=str(tmp_path))
            for name in ("sugar_crepe/replace_rel", "winoground", "vg_relation", "vg_attribution")]
    config = SuiteConfig(tasks=rows, loader=LoaderOptions(batch_size=4, num_workers=0))
    run = run_suite(model, _preprocess(model), config, model_id="m", store=tmp_path / "store", say=lambda line: None)
    assert [row["name"] for row in run.rows] == [f"image_caption_selection:{spec.dataset}" for spec in rows]
    headers, cells = table_cells(run.rows)
    assert headers[3:] == ["text", "image", "group", "macro acc"]
    again = run_suite(model, _preprocess(model), config, model_id="m", store=tmp_path / "store", say=lambda line: None)
    assert len(again.reused) == 4


def test_bad_copies_are_one_line(tmp_path, model):
    write_sugar_crepe(tmp_path / "sc", subsets=("add_obj",))
    (tmp_path / "sc" / "val2017" / "000000397134.jpg").unlink()
    with pytest.raises(ClipModuleError, match=r"^sugar_crepe/add_obj: 1 of 6 images named in add_obj.json are "
                                              r"missing from .*val2017 \(first: 000000397134.jpg\)$"):
        open_dataset("sugar_crepe/add_obj", tmp_path / "sc")
    with pytest.raises(ClipModuleError, match=r"^sugar_crepe/swap_att \(test\): .* is missing swap_att.json or "
                                              r"data/swap_att.json"):
        open_dataset("sugar_crepe/swap_att", tmp_path / "sc")
    write_winoground(tmp_path / "wg")
    lines = (tmp_path / "wg" / "data" / "examples.jsonl").read_text().splitlines()
    broken = json.loads(lines[2])
    del broken["caption_1"]
    (tmp_path / "wg" / "data" / "examples.jsonl").write_text("\n".join([*lines[:2], json.dumps(broken)]))
    with pytest.raises(ClipModuleError, match=r"examples.jsonl: entry on line 3 lacks caption_1 \(has id, caption_0"):
        open_dataset("winoground", tmp_path / "wg")
    with pytest.raises(ClipModuleError, match=r"vg_relation \(test\): .* is missing visual_genome_relation.json, "
                                              "images"):
        open_dataset("vg_relation", tmp_path)
    spec = TaskSpec("zeroshot", dataset="winoground", root=str(write_winoground(tmp_path / "wg2")))
    with pytest.raises(ClipModuleError, match="winoground: a image caption selection dataset, not a classification"):
        from clipmodule.eval.suite import open_data

        open_data(spec, _preprocess(model))


def test_the_command_writes_its_record(tmp_path, model, capsys):
    save_checkpoint(model, tmp_path / "tiny.safetensors")
    write_sugar_crepe(tmp_path / "sc", subsets=("swap_att",))
    output = tmp_path / "out.json"
    code = clipmodule(["eval", "image_caption_selection", "--model", str(tmp_path / "tiny.safetensors"),
                       "--dataset", "sugar_crepe/swap_att", "--dataset_root", str(tmp_path / "sc"),
                       "--output", str(output), "--tracking.uri", "none", "--loader.num_workers", "0"])
    assert code == 0
    record = json.loads(output.read_text())
    assert record["metrics"]["num_samples"] == 6 and 0 <= record["metrics"]["acc"] <= 1
    capsys.readouterr()
    code = clipmodule(["eval", "image_caption_selection", "--model", str(tmp_path / "tiny.safetensors"),
                       "--dataset", "winoground", "--dataset_root", str(tmp_path / "sc"), "--output", str(output),
                       "--tracking.uri", "none"])
    error = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in error and "winoground (test):" in error and "examples.jsonl" in error


def test_subsets_in_one_suite_encode_their_shared_images_once(tmp_path, model):
    write_sugar_crepe(tmp_path, subsets=("add_att", "swap_obj", "replace_att"), per_subset=6)
    rows = [TaskSpec("image_caption_selection", dataset=f"sugar_crepe/{subset}", root=str(tmp_path))
            for subset in ("add_att", "swap_obj", "replace_att")]
    encoded = []
    encode_image = model.encode_image
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(model, "encode_image", lambda images, **kw: encoded.append(len(images)) or encode_image(
            images, **kw))
        run = run_suite(model, _preprocess(model), SuiteConfig(tasks=rows, loader=LoaderOptions(num_workers=0)),
                        store=None, say=lambda line: None)
    assert sum(encoded) == 6  # three subsets of the same six COCO images
    alone = image_caption_selection(model, open_dataset("sugar_crepe/swap_obj", tmp_path).with_transform(
        _preprocess(model)), LoaderOptions(num_workers=0))
    assert run.rows[1]["metrics"]["acc"] == pytest.approx(alone["acc"])
