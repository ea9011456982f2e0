"""Task kinds are registered once: a suite, its resume key, its table and DataComp's groups ask the kind."""

from __future__ import annotations

import pytest

from clipmodule.errors import ClipModuleError
from clipmodule.eval import tasks
from clipmodule.eval.groups import grouped_averages, main_metric
from clipmodule.eval.options import SuiteConfig, TaskSpec
from clipmodule.eval.suite import run_suite, table_cells
from clipmodule.eval.tasks import TaskKind, kind_of, register_task_kind, task_kind


def _open(spec, preprocess):
    return ([spec.dataset] * 3,)


def _run(model, spec, data, context):
    return {"top1": 0.25 * len(data[0]) / 3, "num_samples": len(data[0])}


COUNT = TaskKind(name="count", data_keys=("dataset",), open=_open, run=_run,
                 main_metric=lambda metrics, dataset: ("top1", metrics["top1"]), group="by dataset")


@pytest.fixture
def count_kind(monkeypatch):
    monkeypatch.setitem(tasks._KINDS, "count", COUNT)
    return COUNT


def test_the_built_in_kinds_and_their_data(tmp_path):
    assert tasks.task_kinds()[:3] == ["zeroshot", "retrieval", "linear-probe"]
    assert kind_of(TaskSpec("linear-probe", train="a", test="b")).data_names(
        TaskSpec("linear-probe", train="a", test="b")) == ("a", "b")
    with pytest.raises(ClipModuleError, match="row: unknown task 'nosuch' \\(one of zeroshot, retrieval"):
        kind_of(TaskSpec("nosuch", dataset="x", name="row"))
    with pytest.raises(ClipModuleError, match="a linear-probe task needs test"):
        kind_of(TaskSpec("linear-probe", train="a"))
    with pytest.raises(ClipModuleError, match="already registered"):
        register_task_kind(task_kind("zeroshot"))


def test_a_registered_kind_runs_in_a_suite_and_joins_its_datasets_group(count_kind):
    config = SuiteConfig(tasks=[TaskSpec("count", dataset="imagenet1k", name="counted"),
                                TaskSpec("count", dataset="cifar100", name="vtab-counted")])
    run = run_suite(None, lambda image: image, config, model_id="m", store=None, say=lambda line: None)
    assert [row["task"] for row in run.rows] == ["count", "count"]
    assert run.rows[0]["metrics"] == {"top1": 0.25, "num_samples": 3}
    headers, cells = table_cells(run.rows)
    assert headers[:4] == ["task", "kind", "data", "top-1"] and cells[0][:4] == ["counted", "count", "imagenet1k",
                                                                                "25.00"]
    assert main_metric(run.rows[0]) == ("top1", 0.25)
    groups = {group["group"]: group for group in grouped_averages(run.rows)}
    assert groups["ImageNet"]["count"] == 1 and groups["VTAB"]["count"] == 1 and groups["Average"]["count"] == 2


def test_groups_ask_the_kind_not_its_name():
    rows = [{"task": "retrieval", "dataset": "flickr30k",
             "metrics": {"image_to_text_R@1": 0.5, "text_to_image_R@1": 0.3}},
            {"task": "linear-probe", "dataset": "cifar100 → cifar100", "metrics": {"top1": 0.9}},
            {"task": "zeroshot", "dataset": "pets", "metrics": {"top1": 0.7, "mean_per_class_recall": 0.6}}]
    assert main_metric(rows[0]) == ("mean_R@1", pytest.approx(0.4))
    assert main_metric(rows[1]) is None
    assert main_metric(rows[2]) == ("mean_per_class_recall", 0.6)
    groups = {group["group"]: group for group in grouped_averages(rows)}
    assert groups["Retrieval"]["count"] == 1 and groups["VTAB"]["count"] == 1
    assert groups["Average"]["score"] == pytest.approx(0.5)
