"""The objectives comparison's plan: each run is its baseline plus its one option, and the held-out sets are the
demo's. (`python -m demo.objectives` itself needs a `make demo` output: it is run by hand, see the README.)"""

import json
from pathlib import Path

from demo.objectives import SETS, finetune_runs, student_runs, zeroshot_sets


def _extra(runs: dict[str, list[str]], baseline: list[str]) -> dict[str, set[str]]:
    return {name: set(options) - set(baseline) for name, options in runs.items()}


def test_each_run_is_its_baseline_and_its_option():
    students = student_runs(Path("teacher.ckpt"), 480)
    extra = _extra(students, students["student"])
    assert extra["student-distilled"] == {"--model.distill={teacher: teacher.ckpt}"}
    assert extra["student-hard-negatives"] == {"--model.hard_negatives={count: 2}"}
    assert {option.split("=")[0] for option in extra["student-lion"]} == {
        "--model.optim.name", "--model.optim.lr", "--model.optim.weight_decay"}
    finetunes = finetune_runs(Path("start.ckpt"), 120)
    extra = _extra(finetunes, finetunes["finetune-full"])
    assert extra["finetune-layer-decay"] == {"--model.optim.layer_decay=0.75"}
    assert extra["finetune-hard-negatives"] == {"--model.hard_negatives={count: 2}"}
    assert "--model.lora={rank: 8, alpha: 16.0}" in extra["finetune-lora"]
    assert all("--model.init_from=start.ckpt" in options for options in finetunes.values())


def test_the_held_out_sets_are_the_demos_folders():
    sets = json.loads(zeroshot_sets(Path("demo_out")))
    assert list(sets) == list(SETS)
    assert sets["shapes"] == {"data": "demo_out/source/eval/shapes",
                              "classnames": "demo_out/source/eval/shapes/classnames.txt",
                              "templates": "demo_out/source/eval/shapes/templates.txt"}
