"""The objectives comparison's plan: each run is its baseline plus its one option, and the held-out sets are the
demo's. (`python -m demo.objectives` itself needs a `make demo` output: it is run by hand, see the README.)"""

import json
from pathlib import Path

import pytest

from demo.objectives import SETS, finetune_runs, plan_names, run_all, student_runs, zeroshot_sets


def _extra(runs: dict[str, list[str]], baseline: list[str], allowed_missing: frozenset[str] = frozenset()
           ) -> dict[str, set[str]]:
    """Each run's options beyond the baseline's; a baseline option a run neither has nor sets to another value (by
    its name) must be `allowed_missing` (compared both ways: a run that dropped one is not "its baseline plus one")."""
    for name, options in runs.items():
        names = {option.split("=")[0] for option in options}
        missing = {option for option in baseline if option.split("=")[0] not in names}
        assert missing <= allowed_missing, f"{name} lacks the baseline's {sorted(missing - allowed_missing)}"
    return {name: set(options) - set(baseline) for name, options in runs.items()}


def test_each_run_is_its_baseline_and_its_option():
    students = student_runs(Path("teacher.ckpt"), 480)
    # the baseline's EMA is a shadow of its weights (val_ema/* beside val/*): it changes nothing the others train
    extra = _extra(students, students["student"], frozenset({"--model.ema={decay: 0.99}"}))
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


def test_a_run_dropping_a_baseline_option_is_caught():
    students = student_runs(Path("teacher.ckpt"), 480)
    students["student-lion"] = [option for option in students["student-lion"] if "max_steps" not in option]
    with pytest.raises(AssertionError, match="student-lion lacks the baseline's"):
        _extra(students, students["student"], frozenset({"--model.ema={decay: 0.99}"}))


def test_only_refuses_an_unknown_run_in_one_line_naming_the_plans(tmp_path):
    with pytest.raises(SystemExit, match="--only studnet: not a run of the plan") as refused:
        run_all(tmp_path / "demo_out", tmp_path / "work", 1, 1, only=["student", "studnet"])
    assert all(name in str(refused.value) for name in plan_names()) and "\n" not in str(refused.value)
    assert not (tmp_path / "work").exists()
