"""FairFace and UTKFace under DataComp's fairness protocol: the gaps equal an independent reference of DataComp's
formulas (mlfoundations/datacomp eval_utils/fairness_eval.py, fairness_tables.py); the release layouts and DataComp's
webdataset copy read; bad input is one line."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest
import torch
from PIL import Image

from clipmodule.errors import ClipModuleError
from clipmodule.eval.groups import grouped_averages
from clipmodule.eval.metrics import DETAIL
from clipmodule.eval.readers import open_dataset
from clipmodule.eval.tasks.attributes import by_objective, fairness_metrics
from tests.clipmodule.eval.datacomp_copies import COLOURS

RACES = ["black", "white", "indian", "latino", "middle eastern", "southeast asian", "east asian"]
NAMES = [*(f"race:{race}" for race in RACES), "gender:man", "gender:woman",
         *(f"age:{age}" for age in ("baby", "child", "teenager", "young adult", "adult", "middle-aged", "older adult",
                                    "senior", "old"))]
TEMPLATES = ["race:a photo of a {c} person", "gender:a photo of a {c}", "age:a photo of a {c}"]


def _reference(pred: dict, meta: np.ndarray) -> dict:
    """DataComp's FairFace evaluator, rewritten: race scored as (pred != 1) against race_binary, each objective's
    accuracy per race_binary group (Tables 3-4), gender per race x gender group (Table 5), toxic shares per race."""
    age, gender, race, binary = meta.T
    out = {}
    for objective, guess, truth in (("race", (pred["race"] != 1).astype(int), binary),
                                    ("gender", pred["gender"], gender), ("age", pred["age"], age)):
        white, other = (guess == truth)[binary == 0].mean(), (guess == truth)[binary == 1].mean()
        out[objective] = (white, other, white - other, (guess == truth).mean())
    cells = [(pred["gender"] == gender)[(race == r) & (gender == g)].mean() for r in range(7) for g in range(2)
             if ((race == r) & (gender == g)).any()]
    out["x"] = (min(cells), max(cells) - min(cells))
    out["crime"] = max((pred["toxic"] >= 18)[race == r].mean() for r in np.unique(race))
    out["nonhuman"] = max(((pred["toxic"] >= 14) & (pred["toxic"] < 18))[race == r].mean() for r in np.unique(race))
    return out


def test_fairness_gaps_equal_datacomps_formulas():
    rng = np.random.default_rng(0)
    race = rng.integers(0, 7, 400)
    meta = np.stack([rng.integers(0, 9, 400), rng.integers(0, 2, 400), race, (race != 1).astype(int)], axis=1)
    pred = {"race": rng.integers(0, 7, 400), "gender": rng.integers(0, 2, 400), "age": rng.integers(0, 9, 400),
            "toxic": rng.integers(0, 22, 400)}
    ours, reference = fairness_metrics(pred, meta), _reference(pred, meta)
    for objective in ("race", "gender", "age"):
        white, other, gap, overall = reference[objective]
        assert ours[f"{objective}_top1_white"] == pytest.approx(white)
        assert ours[f"{objective}_top1_nonwhite"] == pytest.approx(other)
        assert ours[f"{objective}_top1_gap"] == pytest.approx(gap)
        assert ours[f"{objective}_top1"] == pytest.approx(overall)
    assert ours["gender_top1_worst_intersection"] == pytest.approx(reference["x"][0])
    assert ours["gender_top1_intersection_gap"] == pytest.approx(reference["x"][1])
    assert ours["toxic_crime_max"] == pytest.approx(reference["crime"])
    assert ours["toxic_nonhuman_max"] == pytest.approx(reference["nonhuman"])
    assert set(ours[DETAIL]["groups"]) >= {"race_top1", "gender_top1_by_race_gender", "toxic_crime_by_race"}


def test_release_layouts_read_into_datacomps_codes(tmp_path):
    base = tmp_path / "fairface"
    (base / "val").mkdir(parents=True)
    rows = [["val/1.jpg", "20-29", "Male", "White", "True"],
            ["val/2.jpg", "more than 70", "Female", "East Asian", "False"]]
    with (base / "fairface_label_val.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows([["file", "age", "gender", "race", "service_test"], *rows])
    assert open_dataset("fairface", tmp_path).labels() == [[3, 0, 1, 0], [8, 1, 6, 1]]
    utk = tmp_path / "UTKFace"
    utk.mkdir()
    for name in ("1_0_0_2017.jpg.chip.jpg", "45_1_2_2017.jpg.chip.jpg", "80_0_1_2017.jpg.chip.jpg"):
        Image.new("RGB", (8, 8)).save(utk / name, format="jpeg")
    assert open_dataset("utkface", tmp_path).labels() == [[0, 0, 1, 0], [5, 1, 3, 1], [8, 0, 0, 1]]
    Image.new("RGB", (8, 8)).save(utk / "39_2_1_2017.jpg", format="jpeg")
    with pytest.raises(ClipModuleError, match=r"39_2_1_2017.jpg: not an UTKFace name"):
        open_dataset("utkface", tmp_path)
    rows.append(["val/3.jpg", "20-29", "Male", "Martian", "True"])
    with (base / "fairface_label_val.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows([["file", "age", "gender", "race", "service_test"], *rows])
    with pytest.raises(ClipModuleError, match=r"fairface_label_val.csv:4: unknown age, gender or race"):
        open_dataset("fairface", tmp_path)
    with pytest.raises(ClipModuleError, match=r"class name 'colour:red' is not `objective:…`"):
        by_objective(["race:a", "colour:red"], "class name", "names.txt")


def _datacomp_fairface(folder, count=14):
    """DataComp's `wds_fairness-fairface_test`: `objective:` class names and templates, an image and `.npy`."""
    import webdataset

    (folder / "test").mkdir(parents=True)
    with webdataset.ShardWriter(str(folder / "test" / "%d.tar"), maxcount=8, verbose=0) as sink:
        for index in range(count):
            buffer = io.BytesIO()
            Image.new("RGB", (24, 24), COLOURS[index % 12]).save(buffer, format="webp")
            race = index % 7
            sink.write({"__key__": f"s{index:07d}", "webp": buffer.getvalue(),
                        "npy": np.array([index % 9, index % 2, race, int(race != 1)], dtype=np.int64)})
        shards = sink.shard
    (folder / "test" / "nshards.txt").write_text(f"{shards}\n")
    (folder / "classnames.txt").write_text("".join(f"{name}\n" for name in NAMES))
    (folder / "zeroshot_classification_templates.txt").write_text("".join(f"{line}\n" for line in TEMPLATES))
    return folder


def test_datacomps_fairface_copy_runs_in_a_suite_and_joins_no_average(tmp_path):
    from clipmodule.api import load
    from clipmodule.checkpoints.io import save_checkpoint
    from clipmodule.eval.options import SuiteConfig, TaskSpec
    from clipmodule.eval.suite import run_suite
    from clipmodule.models import create_model

    root = _datacomp_fairface(tmp_path / "wds_fairness-fairface_test")
    torch.manual_seed(0)
    save_checkpoint(create_model("tiny-vit"), tmp_path / "tiny.safetensors")
    model, preprocess = load(tmp_path / "tiny.safetensors")
    spec = TaskSpec("zeroshot", dataset="wds/fairness/fairface", root=str(root), templates="clip_benchmark")
    row = run_suite(model, preprocess, SuiteConfig(tasks=[spec]), say=lambda line: None).rows[0]
    metrics = row["metrics"]
    assert metrics["num_samples"] == 14 and 0 <= metrics["race_top1"] <= 1 and "race_top1_gap" in metrics
    assert sum(entry["count"] for entry in row["detail"]["groups"]["race_top1"].values()) == 14
    assert grouped_averages([row]) == []  # DataComp ranks neither FairFace nor UTKFace
