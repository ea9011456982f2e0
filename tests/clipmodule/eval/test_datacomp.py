"""DataComp's evaluation: its WILDS, fairness and WinoGAViL metrics equal the peers' metric code (CLIP_benchmark's,
scikit-learn's as WILDS calls it) and independent references of DataComp's formulas; the readers open copies in
the release layouts; per-class results stay in the records; the 38-task average is DataComp's."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from sklearn.metrics import balanced_accuracy_score, f1_score, jaccard_score, recall_score

from clipmodule.errors import ClipModuleError
from clipmodule.eval.groups import DATACOMP_TASKS, grouped_averages
from clipmodule.eval.metrics import classification_metrics, per_class_results
from clipmodule.eval.readers import open_dataset
from clipmodule.eval.readers.winogavil import Game
from clipmodule.eval.subgroups import datacomp_metrics, macro_f1_recall, metadata_fields
from clipmodule.eval.tasks.association import association_scores, jaccard_metrics
from tests.clipmodule.eval import datacomp_copies as copies
from tests.clipmodule.eval.test_zeroshot_parity import accuracy_numpy2


def _random(n: int = 300, classes: int = 12, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, classes - 2, (n,), generator=generator)  # the last two classes have no image
    scores = torch.randn(n, classes, generator=generator) + 1.5 * torch.nn.functional.one_hot(labels, classes)
    return scores, labels


def test_classification_metrics_keep_per_class_results_equal_to_clip_benchmark():
    scores, labels = _random()
    ours = {**classification_metrics(scores, labels, 12), **per_class_results(scores, labels, 12)}
    top1, top5 = accuracy_numpy2(scores, labels, topk=(1, 5))  # CLIP_benchmark's, fixed for numpy 2
    predictions = scores.argmax(dim=1).numpy()
    assert ours["top1"] == pytest.approx(top1) and ours["top5"] == pytest.approx(top5)
    assert ours["mean_per_class_recall"] == pytest.approx(balanced_accuracy_score(labels.numpy(), predictions))
    present = recall_score(labels.numpy(), predictions, labels=list(range(10)), average=None)
    assert ours["per_class_recall"][:10] == pytest.approx(list(present)) and ours["per_class_recall"][10:] == [None] * 2
    assert ours["per_class_count"] == torch.bincount(labels, minlength=12).tolist()


def test_macro_f1_is_wilds_f1_over_the_classes_in_the_labels():
    scores, labels = _random(classes=8, seed=1)
    predictions = scores.argmax(dim=1).numpy()
    predictions[:20] = 7  # a class with no image is predicted: it counts against the others, not as a class
    f1, recall = macro_f1_recall(labels.numpy(), predictions)
    present = np.unique(labels.numpy())  # WILDS's F1: f1_score(y_true, y_pred, average="macro", labels=unique(y_true))
    assert f1 == pytest.approx(f1_score(labels.numpy(), predictions, average="macro", labels=present))
    assert recall == pytest.approx(recall_score(labels.numpy(), predictions, average="macro", labels=present))


def _reference_worst_group(scores: torch.Tensor, labels: torch.Tensor, groups: list, k: int) -> float:
    """DataComp's worst-group accuracy, written from its evaluators (mlfoundations/datacomp eval_utils/
    fairness_eval.py: Dollar Street's TopKAccuracy grouped by income_ds, GeoDE's Accuracy by region; wilds_eval.py:
    FMoW by region): the accuracy of each group with images, the minimum of them."""
    hits = [int(label) in scores[i].topk(k).indices.tolist() for i, label in enumerate(labels)]
    by_group: dict = {}
    for hit, group in zip(hits, groups):
        by_group.setdefault(group, []).append(hit)
    return min(sum(values) / len(values) for values in by_group.values())


@pytest.mark.parametrize(("dataset", "field", "name", "k"), [("dollar_street", "income_ds", "worst_income_top5", 5),
                                                              ("geode", "region", "worst_region_top1", 1),
                                                              ("wilds/fmow", "region", "worst_region_top1", 1)])
def test_worst_group_metrics_equal_datacomps_formula(dataset, field, name, k):
    scores, labels = _random(seed=2)
    groups = [int(value) for value in torch.randint(0, 4, (len(labels),), generator=torch.Generator().manual_seed(3))]
    metadata = {field: groups, **({"year": [0] * len(groups)} if dataset == "wilds/fmow" else {})}
    ours = datacomp_metrics(dataset, scores, labels, metadata)
    assert ours[name] == pytest.approx(_reference_worst_group(scores, labels, groups, k))
    assert min(entry[f"top{k}"] for entry in ours["groups"][field].values()) == ours[name]
    assert sum(entry["count"] for entry in ours["groups"][field].values()) == len(labels)


def test_datacomps_npy_metadata_is_split_into_its_fields():
    rows = [[2, 7, 1], [0, 3, 0]]
    assert metadata_fields("wilds/fmow", {"npy": rows}) == {"region": [2, 0], "year": [7, 3], "y": [1, 0]}
    with pytest.raises(ClipModuleError, match="fewer than the 3 fields"):
        metadata_fields("wilds/fmow", {"npy": [[1]]})
    with pytest.raises(ClipModuleError, match="geode: the copy carries no per-image metadata"):
        datacomp_metrics("geode", *_random(), None)


def test_winogavil_jaccard_equals_datacomps_scoring():
    """DataComp (eval_utils/wino_eval.py): the top-n_assoc candidates by np.argsort, sklearn's jaccard_score."""
    generator = np.random.default_rng(4)
    images = torch.nn.functional.normalize(torch.randn(30, 16), dim=-1)
    cues = torch.nn.functional.normalize(torch.randn(40, 16), dim=-1)
    games, reference, sizes = [], [], []
    for cue in cues:
        size = int(generator.choice([5, 6, 10, 12]))
        candidates = tuple(int(i) for i in generator.choice(30, size, replace=False))
        truth = np.zeros(size, dtype=bool)
        truth[generator.choice(size, int(generator.integers(1, 4)), replace=False)] = True
        games.append(Game("x", candidates, tuple(sorted(c for c, t in zip(candidates, truth) if t))))
        logits = (cue @ images[list(candidates)].T).numpy()
        predicted = np.isin(np.arange(size), np.argsort(logits)[-int(truth.sum()):])
        reference.append(jaccard_score(truth, predicted))
        sizes.append(size)
    scores, counted = association_scores(images, cues, games)
    assert scores == pytest.approx(reference) and list(counted) == sizes
    metrics, reference, sizes = jaccard_metrics(scores, counted), np.array(reference), np.array(sizes)
    assert metrics["jaccard_10_12"] == pytest.approx(reference[sizes >= 10].mean())
    assert metrics["jaccard_5_6"] == pytest.approx(reference[sizes <= 6].mean())


def test_wilds_copies_open_in_their_release_layout(tmp_path):
    copies.iwildcam(tmp_path), copies.camelyon17(tmp_path), copies.fmow(tmp_path)
    iwildcam = open_dataset("iwildcam", tmp_path)
    assert iwildcam.classnames == ["empty", "fox", "deer"] and len(iwildcam) == 8
    assert iwildcam.metadata["location"][:3] == [2, 0, 1]
    camelyon = open_dataset("camelyon17", tmp_path, "test")
    assert len(camelyon) == 2 and camelyon.metadata == {"hospital": [2, 2], "slide": [20, 21]}
    assert camelyon.items[0][0].name == "patch_patient_002_node_1_x_64_y_64.png"
    assert len(open_dataset("camelyon17", tmp_path, "train")) == 3
    fmow = open_dataset("wilds/fmow", tmp_path)
    assert [path.name for path, _ in fmow.items] == [f"rgb_img_{n}.png" for n in range(2, 8)]
    assert fmow.metadata["region"] == ["Asia", "Asia", "Europe", "Europe", "Europe", "Other"]
    assert fmow.classnames[0] == "airport" and fmow.classnames[-1] == "zoo" and len(fmow.classnames) == 62
    assert len(open_dataset("fmow", tmp_path, "val")) == 1 and len(open_dataset("fmow", tmp_path, "id_test")) == 1


def test_bad_copies_are_one_line_naming_them(tmp_path):
    base = copies.fmow(tmp_path)
    (base / "country_code_mapping.csv").unlink()
    with pytest.raises(ClipModuleError, match=r"fmow \(test\): .*fmow_v1.1 is missing country_code_mapping.csv"):
        open_dataset("fmow", tmp_path)
    games = [("sun", ["red", "blue"], ["green"])]
    copies.winogavil(tmp_path / "bad", games)
    with pytest.raises(ClipModuleError, match=r"winogavil_dataset.csv:2: association 'green' is not a candidate"):
        open_dataset("winogavil", tmp_path / "bad")


def test_the_38_task_average_is_datacomps():
    rows = [{"task": "zeroshot", "dataset": name, "metrics": {"top1": 0.5, "mean_per_class_recall": 0.25,
                                                               "macro_f1": 0.1, "worst_region_top1": 0.2,
                                                               "worst_income_top5": 0.3}}
            for name in DATACOMP_TASKS if name not in ("flickr30k", "mscoco_captions", "winogavil")]
    rows += [{"task": "retrieval", "dataset": name, "metrics": {"image_to_text_R@1": 0.4, "text_to_image_R@1": 0.6}}
             for name in ("flickr30k", "mscoco_captions")]
    rows.append({"task": "association", "dataset": "winogavil", "metrics": {"jaccard_10_12": 0.7}})
    groups = {group["group"]: group for group in grouped_averages(rows)}
    assert groups["Average"]["count"] == 38 and groups["Average"]["of"] == 38
    assert groups["Retrieval"]["score"] == pytest.approx((0.5 + 0.5 + 0.7) / 3) and groups["Retrieval"]["of"] == 3
    values = [0.25] * 4 + [0.1, 0.2, 0.2, 0.3] + [0.5] * 27 + [0.5, 0.5, 0.7]  # DataComp's main metric of each
    assert groups["Average"]["score"] == pytest.approx(sum(values) / 38)
    fairface = {"task": "zeroshot", "dataset": "fairface", "metrics": {"race_gap": 0.1}}
    assert grouped_averages([*rows, fairface])[-1]["count"] == 38  # no main metric: not averaged, as DataComp
    other = {"task": "zeroshot", "dataset": "builtin:digits", "metrics": {"top1": 1.0}}
    both = {group["group"]: group for group in grouped_averages([*rows, other])}
    assert both["Average"]["count"] == 39 and both["Average"]["of"] is None
    assert both["DataComp average"]["score"] == pytest.approx(sum(values) / 38) and both["DataComp average"]["of"] == 38


def test_a_suite_runs_datacomps_tasks_on_release_copies_and_keeps_per_class_results(tmp_path):
    from clipmodule.api import load
    from clipmodule.checkpoints.io import save_checkpoint
    from clipmodule.eval.options import SuiteConfig, TaskSpec
    from clipmodule.eval.suite import markdown_table, run_suite
    from clipmodule.models import create_model

    copies.fmow(tmp_path), copies.winogavil(tmp_path)
    torch.manual_seed(0)
    save_checkpoint(create_model("tiny-vit"), tmp_path / "tiny.safetensors")
    model, preprocess = load(tmp_path / "tiny.safetensors")
    config = SuiteConfig(name="dc", tasks=[
        TaskSpec("zeroshot", dataset="fmow", root=str(tmp_path), templates="simple"),
        TaskSpec("association", dataset="winogavil", root=str(tmp_path))])
    run = run_suite(model, preprocess, config, model_id="tiny", store=tmp_path / "store", say=lambda line: None)
    fmow, wino = (row["metrics"] for row in run.rows)
    detail = run.rows[0]["detail"]
    regions = detail["groups"]["region"]
    assert set(regions) == {"Asia", "Europe", "Other"} and fmow["worst_region_top1"] == min(
        entry["top1"] for entry in regions.values())
    assert len(detail["per_class_recall"]) == 62 and sum(detail["per_class_count"]) == 6 and "groups" not in fmow
    assert wino["num_games"] == 4 and wino["num_images"] == 12 and set(wino) >= {"jaccard_5", "jaccard_10_12"}
    groups = {group["group"]: group for group in grouped_averages(run.rows)}
    assert groups["Retrieval"]["score"] == pytest.approx(wino["jaccard_10_12"]) and groups["Average"]["of"] == 38
    table = markdown_table(run.rows, "dc")
    assert "| Retrieval |" in table and "| worst region | Jaccard 10-12 |" in table
    again = run_suite(model, preprocess, config, model_id="tiny", store=tmp_path / "store", say=lambda line: None)
    assert again.reused == ["zeroshot:fmow", "association:winogavil"] and again.rows[0]["metrics"] == fmow
    assert again.rows[0]["detail"] == detail  # the per-class results come back with a reused row
    images = {path: path.stat() for path in (tmp_path / "winogavil" / "winogavil_images").iterdir()}
    games = [*copies.WINOGAVIL_GAMES[:3], ("sun", copies.COLOURS[:12], ["yellow"])]  # one answer fewer
    copies.winogavil(tmp_path, games)
    for path, stat in images.items():  # the same images, untouched: only the games differ
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    third = run_suite(model, preprocess, config, model_id="tiny", store=tmp_path / "store", say=lambda line: None)
    assert third.changed == ["association:winogavil"] and third.reused == ["zeroshot:fmow"]


def _datacomp_wds(folder, incomes, classes=7, drop_npy_at=None):
    """DataComp's copy of Dollar Street (`wds_fairness-dollar_street_test`, CLIP_benchmark's webdataset layout): an
    image, `.cls` and the `.npy` metadata [income_ds, income_meta, region] per sample."""
    import io

    import webdataset
    from PIL import Image

    (folder / "test").mkdir(parents=True)
    with webdataset.ShardWriter(str(folder / "test" / "%d.tar"), maxcount=4, verbose=0) as sink:
        for index, income in enumerate(incomes):
            buffer = io.BytesIO()
            Image.new("RGB", (24, 24), copies.COLOURS[index % 12]).save(buffer, format="webp")
            sample = {"__key__": f"s{index:07d}", "webp": buffer.getvalue(), "cls": index % classes}
            if index != drop_npy_at:
                sample["npy"] = np.array([income, 1000 + index, index % 3], dtype=np.int64)
            sink.write(sample)
        shards = sink.shard
    (folder / "test" / "nshards.txt").write_text(f"{shards}\n")
    (folder / "classnames.txt").write_text("".join(f"{name}\n" for name in copies.COLOURS[:classes]))
    (folder / "zeroshot_classification_templates.txt").write_text("a photo of {c}.\n")
    return folder


@pytest.mark.parametrize(("name", "field", "metric"), [("dollar_street", "income_ds", "worst_income_top5"),
                                                     ("geode", "region", "worst_region_top1")])
def test_datacomps_webdataset_copy_carries_its_metadata_into_the_worst_group_metric(tmp_path, name, field, metric):
    from clipmodule.api import load
    from clipmodule.checkpoints.io import save_checkpoint
    from clipmodule.eval.options import SuiteConfig, TaskSpec
    from clipmodule.eval.suite import run_suite
    from clipmodule.models import create_model

    incomes = [0, 1, 2, 3, 0, 1, 2, 3, 3, 3]  # the first metadata field: income group, or GeoDE's region
    root = _datacomp_wds(tmp_path / f"wds_{name}_test", incomes)
    dataset = open_dataset(f"wds/{name}", root)
    assert metadata_fields(name, dataset.metadata)[field] == incomes
    torch.manual_seed(0)
    save_checkpoint(create_model("tiny-vit"), tmp_path / "tiny.safetensors")
    model, preprocess = load(tmp_path / "tiny.safetensors")
    spec = TaskSpec("zeroshot", dataset=f"wds/{name}", root=str(root), templates="clip_benchmark")
    row = run_suite(model, preprocess, SuiteConfig(tasks=[spec]), say=lambda line: None).rows[0]
    groups, k = row["detail"]["groups"][field], metric[-1]
    assert {group: entry["count"] for group, entry in groups.items()} == {"0": 2, "1": 2, "2": 2, "3": 4}
    assert row["metrics"][metric] == min(entry[f"top{k}"] for entry in groups.values())
    _datacomp_wds(tmp_path / "partial", incomes, drop_npy_at=5)
    with pytest.raises(ClipModuleError, match=r"partial: 1 of 10 samples lack the .npy metadata the others carry"):
        open_dataset(f"wds/{name}", tmp_path / "partial")


def test_the_shipped_datacomp_suite_lists_its_40_tasks_as_datacomp_names_them():
    from pathlib import Path

    from clipmodule.eval.cli import parse_command
    from clipmodule.eval.names import dataset_key
    from clipmodule.eval.suite import preflight

    config = Path(__file__).resolve().parents[3] / "experiments" / "benchmarks" / "datacomp.yaml"
    suite = parse_command("suite", ["-c", str(config), "--model", "m"])
    for task in suite.tasks:
        preflight(task)
    keys = [dataset_key(task.dataset) for task in suite.tasks]
    assert len(keys) == 40 and set(keys) == {*DATACOMP_TASKS, "fairface", "utkface"}
    assert {task.name for task in suite.tasks} >= {"misc/winogavil", "wilds/fmow", "fairness/dollar_street"}
