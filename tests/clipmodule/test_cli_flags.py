"""One flag spelling across `clipmodule`'s own commands (jsonargparse's, as `fit`): the canonical spelling and an
old one both work, the old one with exactly one deprecation line; an unknown flag is refused in one line."""

from __future__ import annotations

import pytest
import torch

from clipmodule.checkpoints.io import save_checkpoint
from clipmodule.classifiers.cli import _parse as parse_classifier_test
from clipmodule.cli import main as clipmodule
from clipmodule.eval.cli import parse_command
from clipmodule.models import create_model


def deprecations(err: str) -> list[str]:
    return [line for line in err.splitlines() if "(the old spelling still works)" in line]


def test_eval_options_old_spellings_parse_as_the_canonical_ones(capsys):
    base = ["--model", "m", "--dataset", "cifar10"]
    canonical = parse_command("zeroshot", [*base, "--dataset_root", "r", "--loader.batch_size", "3",
                                           "--tracking.uri", "none", "--tokenizer_folder", "t"])
    assert deprecations(capsys.readouterr().err) == []
    old = parse_command("zeroshot", [*base, "--dataset-root", "r", "--loader.batch-size=3", "--tracking-uri", "none",
                                     "--tokenizer-folder", "t", "--dataset-root", "r"])
    assert old == canonical and canonical.loader.batch_size == 3 and canonical.tracking.uri == "none"
    assert deprecations(capsys.readouterr().err) == [
        f"clipmodule eval zeroshot: {old} is spelt {new} now (the old spelling still works)"
        for old, new in (("--dataset-root", "--dataset_root"), ("--loader.batch-size", "--loader.batch_size"),
                         ("--tracking-uri", "--tracking.uri"), ("--tokenizer-folder", "--tokenizer_folder"))]


def test_classifier_test_options_old_spelling(capsys):
    argv = ["--model", "m", "--checkpoint", "w", "--data", "d"]
    assert parse_classifier_test([*argv, "--loader.num-workers", "0"]) == parse_classifier_test(
        [*argv, "--loader.num_workers", "0"])
    assert deprecations(capsys.readouterr().err) == [
        "clipmodule classifiers test: --loader.num-workers is spelt --loader.num_workers now (the old spelling "
        "still works)"]


@pytest.mark.parametrize("argv", [
    ["eval", "zeroshot", "--model", "m", "--dataset", "d", "--loader.batch-sise"],
    ["classifiers", "--wide"], ["classifiers", "list", "--wide"], ["compare", "--tracking-url"],
    ["convert", "a", "b", "--quick-gelus"], ["search", "q", "--index", "i", "--kk"]])
def test_an_unknown_flag_is_refused_in_one_line(argv, capsys):
    assert clipmodule([*argv, "3"]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and f"unrecognized arguments: {argv[-1]}" in err, err


@pytest.mark.parametrize("flag", ["--tracking.uri", "--tracking-uri"])
def test_compare_store_flag(flag, tmp_path, capsys):
    assert clipmodule(["compare", flag, f"sqlite:///{tmp_path / 'missing.db'}"]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert "missing.db: no MLflow store" in lines[-1]
    assert deprecations("\n".join(lines)) == ([] if flag == "--tracking.uri" else [
        "clipmodule compare: --tracking-uri is spelt --tracking.uri now (the old spelling still works)"])


@pytest.mark.parametrize("flag", ["--quick_gelu", "--quick-gelu"])
def test_convert_quick_gelu_flag(flag, tmp_path, capsys):
    torch.manual_seed(0)
    source = save_checkpoint(create_model("tiny-vit"), tmp_path / "tiny.safetensors")
    assert clipmodule(["convert", str(source), str(tmp_path / "out.safetensors"), flag]) == 0
    captured = capsys.readouterr()
    assert "QuickGELU" in captured.out
    assert deprecations(captured.err) == ([] if flag == "--quick_gelu" else [
        "clipmodule convert: --quick-gelu is spelt --quick_gelu now (the old spelling still works)"])
