"""`clipmodule classifiers` (the list) and `clipmodule classifiers test -c CONFIG --checkpoint W --data FOLDER`.

`classifiers test` mirrors mmpretrain's `tools/test.py <config> <checkpoint>`; `clipmodule test` with
`--checkpoint` is kept as its alias (see `clipmodule.cli.resolve_alias`). It reports top-1 / top-5 of a
named classifier (see `clipmodule.classifiers.zoo`) on a labelled image folder, e.g. ImageNet's validation set in
ImageFolder layout (one folder per class, sorted folder order = class index).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from clipformats.commands import HELP_FLAGS, Command, dispatch
from clipmodule.errors import ClipModuleError
from clipmodule.eval.options import LoaderOptions
from clipmodule.tracking.mlflow import TrackingOptions


@dataclass
class ClassifierTestCommand:
    """Top-1/top-5 of a named classifier on a labelled dataset, as mmpretrain's test command."""

    checkpoint: str
    """Classifier weights: this project's, timm's or mmpretrain's layout (.safetensors or .pth/.pt)."""
    data: str
    """Image folder (one sub-folder per class, sorted = class index), .csv/.tsv of path,label, or .tar shards."""
    model: str = ""
    """Classifier name (`clipmodule classifiers` lists them); usually set by the -c config."""
    classnames: str = "imagenet"
    """Class-name file, or `imagenet` for the 1000 ImageNet classes."""
    output: str | None = None
    """JSON results file; default eval_results/test-<model>.json."""
    loader: LoaderOptions = field(default_factory=LoaderOptions)
    tracking: TrackingOptions = field(default_factory=TrackingOptions)


def _parse(argv: list[str]) -> ClassifierTestCommand:
    from clipmodule.options import parse_dataclass

    command = parse_dataclass(ClassifierTestCommand, "clipmodule classifiers test", argv)
    if not command.model:
        raise ClipModuleError("no classifier named: give -c <config> or --model <name> (see `clipmodule classifiers`)")
    return command


def test_classifier(command: ClassifierTestCommand) -> dict[str, Any]:
    """Loads the classifier with the checkpoint's weights and scores it on the data; returns the metrics."""
    from clipmodule.classifiers.inference import classifier_transform
    from clipmodule.classifiers.zoo import get_model
    from clipmodule.eval.metrics import DETAIL, classification_metrics, per_class_results
    from clipmodule.eval.prompts import read_classnames
    from clipmodule.eval.readers import open_classification
    from clipmodule.eval.tasks import data_damage, extract_features

    classnames = read_classnames(command.classnames)
    model = get_model(command.model, pretrained=command.checkpoint, classnames=classnames,
                      device=command.loader.torch_device())
    dataset = open_classification(command.data, classifier_transform(model), classnames)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  transient=True) as progress:
        logits, labels = extract_features(model, dataset, command.loader, progress, f"test {command.model}")
    import torch

    labels = torch.tensor(labels)
    return {**classification_metrics(logits, labels, len(classnames)), **data_damage(dataset),
            DETAIL: per_class_results(logits, labels, len(classnames))}  # kept in the record, beside the metrics


def test(argv: list[str]) -> int:
    from clipmodule.eval.results import check_output_file, make_record, save_and_track
    from clipmodule.tracking.mlflow import check_store, numeric_metrics

    command = _parse(argv)
    output = check_output_file(command.output or Path("eval_results") / f"test-{command.model}.json")
    if command.tracking.enabled:  # before the test, which may take an hour on ImageNet
        check_store(command.tracking.uri, must_exist=False)
    from clipmodule.eval.metrics import DETAIL

    metrics = test_classifier(command)
    detail = metrics.pop(DETAIL)
    record = make_record("test", command.model, metrics, checkpoint=command.checkpoint, dataset=command.data,
                         config=asdict(command), detail=detail)
    save_and_track(output, record, command.tracking, f"test:{command.model}",
                   {"task": "test", "model": command.model, "checkpoint": command.checkpoint, "dataset": command.data},
                   numeric_metrics({f"accuracy/{key}": value for key, value in metrics.items()}))
    line = f"accuracy/top1: {100 * metrics['top1']:.4f}"
    if "top5" in metrics:
        line += f"  accuracy/top5: {100 * metrics['top5']:.4f}"
    print(f"{line}  ({metrics['num_samples']} images)")
    print(f"results: {output}")
    return 0


COMMANDS = [
    Command("list", "mmpretrain's CLIP classifier names with parameter and FLOP counts (the default)",
            "clipmodule.classifiers.cli:list_classifiers"),
    Command("test", ClassifierTestCommand.__doc__, "clipmodule.classifiers.cli:test"),
]


def main(argv: list[str]) -> int:
    """`clipmodule classifiers [list]` or `clipmodule classifiers test ...`: no subcommand (or only options of
    the list) lists them."""
    if not argv or (argv[0].startswith("-") and argv[0] not in HELP_FLAGS):
        argv = ["list", *argv]
    return dispatch("clipmodule classifiers", COMMANDS, argv)


def list_classifiers(argv: list[str]) -> int:
    """`clipmodule classifiers`: the named classifiers with parameters and FLOPs counted here."""
    from clipmodule.options import new_parser, parse

    parse(new_parser("clipmodule classifiers [list | test]",
                     "List mmpretrain's CLIP classifier names with parameter and FLOP counts (one multiply-add = "
                     "one FLOP, as mmpretrain's table). `clipmodule classifiers test --help`: test one."), argv)
    from rich.console import Console
    from rich.table import Table

    from clipmodule.classifiers.complexity import complexity_on_meta
    from clipmodule.classifiers.zoo import CLASSIFIER_SPECS, CLIPImageClassifier

    table = Table(caption="ViT-B/32 or ViT-B/16 CLIP image trunk + linear head; the name says the pretraining")
    table.add_column("name", no_wrap=True)
    for header in ("px", "params (M)", "FLOPs (G)"):
        table.add_column(header, justify="right")
    for name, spec in CLASSIFIER_SPECS.items():
        params, flops = complexity_on_meta(lambda spec=spec: CLIPImageClassifier(spec), spec.image_size)
        table.add_row(name, str(spec.image_size), f"{params / 1e6:.2f}", f"{flops / 1e9:.2f}")
    Console().print(table)
    return 0
