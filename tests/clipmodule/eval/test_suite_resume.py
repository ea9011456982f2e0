"""`eval suite` as a long job: per-task records resume a crashed suite, missing data is named and skipped,
image features are computed once per dataset, and the table carries DataComp's grouped averages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

from clipmodule.checkpoints.io import save_checkpoint
from clipmodule.cli import main as clipmodule
from clipmodule.errors import ClipModuleError
from clipmodule.eval.groups import grouped_averages, main_metric
from clipmodule.eval.options import LinearProbeOptions, SuiteConfig, TaskSpec
from clipmodule.eval.readers import open_classification
from clipmodule.eval.readers.builtin import SHAPE_CLASSES, render_shapes
from clipmodule.eval.results import model_fingerprint
from clipmodule.eval.suite import run_suite
from clipmodule.eval.tasks import linear_probe, zeroshot_classification
from clipmodule.models import create_model

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py
PROBE = LinearProbeOptions(log10_c_range=(-1, 3), steps_per_decade=1, max_iter=200, threads=1)


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """A tiny checkpoint and shape images as train/test folders (6 + 4 per class)."""
    root = tmp_path_factory.mktemp("suite")
    torch.manual_seed(0)
    save_checkpoint(create_model("tiny-vit"), root / "tiny.safetensors")
    images, labels, _ = render_shapes(per_class=10)
    seen: dict[int, int] = {}
    for index, (image, label) in enumerate(zip(images, labels)):
        seen[label] = seen.get(label, 0) + 1
        path = root / ("train" if seen[label] <= 6 else "test") / SHAPE_CLASSES[label] / f"{index}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path)
    return root


@pytest.fixture(scope="module")
def model(work):
    from clipmodule.api import load

    return load(work / "tiny.safetensors")


def _suite(work: Path, *extra: TaskSpec) -> SuiteConfig:
    return SuiteConfig(name="shapes", tasks=[
        TaskSpec("zeroshot", dataset=str(work / "test"), templates="simple", name="zs"),
        TaskSpec("linear-probe", train=str(work / "train"), test=str(work / "test"), name="probe"), *extra],
        probe=PROBE)


def test_features_of_a_dataset_are_computed_once_and_give_the_same_metrics(work, model):
    net, preprocess = model
    run = run_suite(net, preprocess, _suite(work), say=lambda line: None)
    assert run.image_passes == 2  # test (zero-shot and probe) once, train once: not three passes
    test = open_classification(str(work / "test"), preprocess)
    train = open_classification(str(work / "train"), preprocess)
    alone = zeroshot_classification(net, test, test.classnames, ["a photo of a {}."])
    assert run.rows[0]["metrics"] == pytest.approx(alone, abs=1e-6)
    probe = linear_probe(net, train, test, len(train.classnames), PROBE)
    assert run.rows[1]["metrics"]["top1"] == pytest.approx(probe["top1"])
    assert run.rows[1]["metrics"]["best_C"] == probe["best_C"]


def test_a_crashed_suite_resumes_without_rerunning_finished_tasks(work, model, tmp_path):
    net, preprocess = model
    broken = tmp_path / "broken"
    for name in ("cat", "dog"):
        (broken / name).mkdir(parents=True)
        Image.new("RGB", (32, 32), name == "cat" and "red" or "blue").save(broken / name / "a.png")
    (broken / "cat" / "x.png").write_bytes(b"\x89PNG truncated")
    config = _suite(work, TaskSpec("zeroshot", dataset=str(broken), templates="simple", name="late"))
    store, fingerprint = tmp_path / "tasks", model_fingerprint(str(work / "tiny.safetensors"))
    with pytest.raises(ClipModuleError, match="x.png: unreadable image"):  # the third task dies mid-suite
        run_suite(net, preprocess, config, model_id=fingerprint, store=store, say=lambda line: None)
    finished = sorted(store.glob("*.json"))
    assert len(finished) == 2  # the two tasks before the crash were kept, each in its own record
    written = {path: path.stat().st_mtime_ns for path in finished}
    Image.new("RGB", (32, 32), "red").save(broken / "cat" / "x.png")  # the data is fixed; run again
    said: list[str] = []
    run = run_suite(net, preprocess, config, model_id=fingerprint, store=store, say=said.append)
    assert run.reused == ["zs", "probe"] and run.image_passes == 1  # only the new task read images
    assert said == ["finished before (same model and data), not run again: zs, probe"]
    assert {path: path.stat().st_mtime_ns for path in finished} == written and len(list(store.glob("*.json"))) == 3
    record = json.loads(finished[0].read_text())
    assert record["model"] == fingerprint and record["metrics"]
    again = run_suite(net, preprocess, config, model_id="sha256:another-model", store=store, say=lambda line: None)
    assert again.reused == [] and again.image_passes == 3  # other weights: nothing is reused


def test_missing_data_is_one_line_each_and_the_rest_runs(work, tmp_path, capsys):
    suite = {"name": "partial", "model": str(work / "tiny.safetensors"), "output": str(tmp_path / "out"),
             "probe": {"log10_c_range": [-1, 3], "steps_per_decade": 1, "max_iter": 200, "threads": 1},
             "tasks": [{"name": "gone", "task": "zeroshot", "dataset": str(tmp_path / "not_here"),
                        "templates": "simple"},
                       {"name": "zs", "task": "zeroshot", "dataset": str(work / "test"), "templates": "simple"},
                       {"name": "gone-probe", "task": "linear-probe", "train": str(tmp_path / "nope"),
                        "test": str(work / "test")}]}
    (tmp_path / "suite.yaml").write_text(yaml.safe_dump(suite))
    argv = ["eval", "suite", "-c", str(tmp_path / "suite.yaml"), "--tracking.uri", "none"]
    assert clipmodule(argv) == 0
    err = capsys.readouterr().err
    missing = [line for line in err.splitlines() if line.startswith("missing: ")]
    assert len(missing) == 2 and missing[0].startswith(f"missing: gone: {tmp_path / 'not_here'}")
    assert missing[1].startswith("missing: gone-probe: ")
    table = (tmp_path / "out" / "partial.md").read_text()
    assert "| zs | zeroshot |" in table and "| gone |" not in table
    assert table.split("Not run, data missing on disk:\n")[1].startswith("- gone: ")
    record = json.loads((tmp_path / "out" / "partial.json").read_text())
    assert set(record["missing"]) == {"gone", "gone-probe"} and set(record["metrics"]) == {"zs"}
    assert clipmodule(argv) == 0  # run again: the finished task is reused, the missing ones named again
    err = capsys.readouterr().err
    assert "not run again: zs" in err and sum(line.startswith("missing: ") for line in err.splitlines()) == 2
    assert err.splitlines()[-1] == "not run, data missing: gone, gone-probe"


def _row(name: str, task: str, dataset: str, **metrics: float) -> dict:
    return {"name": name, "task": task, "dataset": dataset, "metrics": metrics}


def test_grouped_averages_use_datacomps_main_metrics():
    rows = [_row("in", "zeroshot", "imagenet1k", top1=0.6, mean_per_class_recall=0.5),
            _row("sketch", "zeroshot", "imagenet_sketch", top1=0.3),
            _row("r", "zeroshot", "ImageNet-R", top1=0.5),
            _row("pets", "zeroshot", "vtab/pets", top1=0.9, mean_per_class_recall=0.8),  # mean recall counts
            _row("c100", "zeroshot", "cifar100", top1=0.4, mean_per_class_recall=0.1),
            _row("coco", "retrieval", "mscoco_captions", **{"image_to_text_R@1": 0.5, "text_to_image_R@1": 0.3}),
            _row("probe", "linear-probe", "cifar10 → cifar10", top1=0.99)]
    assert main_metric(rows[3]) == ("mean_per_class_recall", 0.8) and main_metric(rows[-1]) is None
    groups = {group["group"]: group for group in grouped_averages(rows)}
    assert groups["ImageNet"]["score"] == pytest.approx(0.6)
    assert groups["ImageNet dist. shifts"]["score"] == pytest.approx(0.4)
    assert (groups["ImageNet dist. shifts"]["count"], groups["ImageNet dist. shifts"]["of"]) == (2, 6)
    assert groups["VTAB"]["score"] == pytest.approx(0.6) and groups["VTAB"]["of"] == 13
    assert groups["Retrieval"]["score"] == pytest.approx(0.4)
    assert groups["Average"]["score"] == pytest.approx((0.6 + 0.3 + 0.5 + 0.8 + 0.4 + 0.4) / 6)
    assert groups["Average"]["count"] == 6  # the linear probe is not a zero-shot result


def test_the_papers_names_follow_a_copys_label_order_and_a_misfit_stops_the_suite(work, model, tmp_path):
    from clipmodule.eval.suite import open_data
    from clipmodule.eval.tasks.zeroshot import prompt_classnames
    from tests.clipmodule.eval.readers.copies import write_cifar10, write_fer2013_folders

    net, preprocess = model
    write_fer2013_folders(tmp_path / "fer2013")  # Kaggle's folders: angry, disgust, fear, happy, neutral, …
    spec = TaskSpec("zeroshot", dataset="fer2013", root=str(tmp_path), templates="openai")
    assert prompt_classnames(spec, open_data(spec, preprocess)[0]) == [
        "angry", "disgusted", "fearful", "happy", "neutral", "sad", "surprised"]
    write_cifar10(tmp_path)  # a copy whose meta names 3 classes, where the paper names 10
    config = _suite(work, TaskSpec("zeroshot", dataset="cifar10", root=str(tmp_path), templates="openai",
                                   name="c10"))
    with pytest.raises(ClipModuleError, match="c10: the dataset has 3 classes but the class-name list has 10"):
        run_suite(net, preprocess, config, store=tmp_path / "tasks", say=lambda line: None)
    assert not (tmp_path / "tasks").exists()  # stopped before the first task ran


def test_a_row_whose_data_changed_is_run_again_not_reused(work, model, tmp_path):
    """The stored result is keyed on the model and the task; the data's identity (its files' sizes and
    times, items and labels) is recorded with it, and a copy changed since is run again."""
    import shutil

    net, preprocess = model
    copy = tmp_path / "copy"
    shutil.copytree(work / "test", copy)
    config = SuiteConfig(name="changing", tasks=[TaskSpec("zeroshot", dataset=str(copy), templates="simple",
                                                          name="zs")])
    store, said = tmp_path / "tasks", []
    first = run_suite(net, preprocess, config, model_id="m", store=store, say=said.append)
    record = json.loads(next(store.glob("*.json")).read_text())
    assert record["data"].startswith("data:") and first.rows[0]["data"] == record["data"]
    assert run_suite(net, preprocess, config, model_id="m", store=store, say=said.append).reused == ["zs"]
    victim = sorted(copy.rglob("*.png"))[0]
    Image.new("RGB", (40, 40), "white").save(victim)  # the same name, other pixels
    again = run_suite(net, preprocess, config, model_id="m", store=store, say=said.append)
    assert again.reused == [] and again.changed == ["zs"] and again.image_passes == 1
    assert said[-1] == "data changed since the stored result (or it names none), run again: zs"
    assert json.loads(next(store.glob("*.json")).read_text())["data"] != record["data"]  # the record is renewed
    assert run_suite(net, preprocess, config, model_id="m", store=store, say=lambda line: None).reused == ["zs"]


def test_a_damaged_copy_is_filed_as_failed_not_missing_and_the_suite_goes_on(work, tmp_path, capsys):
    from tests.clipmodule.eval.readers.copies import write_mnist

    write_mnist(tmp_path / "mnist")
    images = tmp_path / "mnist" / "MNIST" / "raw" / "t10k-images-idx3-ubyte.gz"
    images.write_bytes(images.read_bytes()[:40])  # a download cut short
    suite = {"name": "damaged", "model": str(work / "tiny.safetensors"), "output": str(tmp_path / "out"),
             "tasks": [{"name": "mn", "task": "zeroshot", "dataset": "mnist", "root": str(tmp_path / "mnist"),
                        "templates": "simple"},
                       {"name": "gone", "task": "zeroshot", "dataset": "mnist", "root": str(tmp_path),
                        "templates": "simple"},
                       {"name": "zs", "task": "zeroshot", "dataset": str(work / "test"), "templates": "simple"}]}
    (tmp_path / "suite.yaml").write_text(yaml.safe_dump(suite))
    assert clipmodule(["eval", "suite", "-c", str(tmp_path / "suite.yaml"), "--tracking.uri", "none"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert [line for line in err if line.startswith("failed: ")] == [
        f"failed: mn: {images}: unreadable, truncated or corrupt (Compressed file ended before the end-of-stream "
        "marker was reached)"]
    assert [line.split(":")[1] for line in err if line.startswith("missing: ")] == [" gone"]
    record = json.loads((tmp_path / "out" / "damaged.json").read_text())
    assert set(record["failed"]) == {"mn"} and set(record["missing"]) == {"gone"} and set(record["metrics"]) == {"zs"}
    table = (tmp_path / "out" / "damaged.md").read_text()
    assert table.split("Not run, data refused (damaged or inconsistent copy):\n")[1].startswith(f"- mn: {images}")
    assert "not run, data refused (damaged or inconsistent): mn" in err
