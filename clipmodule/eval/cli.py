"""`clipmodule eval zeroshot|retrieval|linear-probe|segmentation|suite|concepts`: options from typed dataclasses.

Each command loads a CLIP model (`clipmodule.load`: any supported checkpoint, or a name with local
weights), evaluates, prints a table, writes a JSON record and logs an MLflow run. `-c file.yaml` reads
the same options from YAML.
"""

from __future__ import annotations

import re
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from clipformats.commands import Command, dispatch
from clipmodule.errors import ClipModuleError
from clipmodule.eval.options import (
    LinearProbeOptions,
    LoaderOptions,
    NamedDataOptions,
    SegmentationSettings,
    SuiteConfig,
    TaskSpec,
)
from clipmodule.options import parse_dataclass
from clipmodule.tracking.mlflow import TrackingOptions


@dataclass
class ZeroShotCommand(NamedDataOptions):
    """Zero-shot classification with a prompt ensemble: top-1, top-5, mean per-class recall."""

    model: str
    """CLIP checkpoint (OpenAI, open_clip, HF or this project's) or a model name with local weights."""
    dataset: str
    """Image folder (one sub-folder per class), .csv/.tsv of path,label, .tar shards (jpg + cls) or builtin:<name>."""
    classnames: str | None = None
    """Class-name file (one per line) or `imagenet`; default: folder names / CSV labels / builtin names."""
    templates: str = "imagenet"
    """Prompt-template file (one per line, one "{}" or "{c}" for the class name), `imagenet` (the paper's 80),
    `simple`, or a .json list of templates or CuPL-style dict of class-specific prompts {class: [prompt, …]}."""
    language: str | None = None
    """CLIP_benchmark's --language: class names and templates in it (with --templates clip_benchmark), or the
    captions of a dataset released per language (xtd10, crossmodal3600…). Default: English."""
    output: str | None = None
    """JSON results file; default eval_results/zeroshot-<dataset>.json."""
    tokenizer_folder: str | None = None
    """Folder with the `tokenizer.json` of a model whose weights came without one (e.g. a fit checkpoint of a
    SigLIP model); default: the one beside the weights."""
    loader: LoaderOptions = field(default_factory=LoaderOptions)
    tracking: TrackingOptions = field(default_factory=TrackingOptions)

    def task(self) -> TaskSpec:
        return TaskSpec("zeroshot", dataset=self.dataset, classnames=self.classnames, templates=self.templates,
                        language=self.language, **self.named_data())


@dataclass
class RetrievalCommand(NamedDataOptions):
    """Image→text and text→image recall@k; an image may have several captions."""

    model: str
    """CLIP checkpoint (OpenAI, open_clip, HF or this project's) or a model name with local weights."""
    dataset: str
    """.csv/.tsv of path,caption (repeat a path for more captions), .tar shards (jpg + txt, a caption per line)
    or builtin:<name>."""
    recall_at: list[int] = field(default_factory=lambda: [1, 5, 10])
    """The k of recall@k."""
    language: str | None = None
    """CLIP_benchmark's --language: class names and templates in it (with --templates clip_benchmark), or the
    captions of a dataset released per language (xtd10, crossmodal3600…). Default: English."""
    output: str | None = None
    """JSON results file; default eval_results/retrieval-<dataset>.json."""
    tokenizer_folder: str | None = None
    """Folder with the `tokenizer.json` of a model whose weights came without one (e.g. a fit checkpoint of a
    SigLIP model); default: the one beside the weights."""
    loader: LoaderOptions = field(default_factory=LoaderOptions)
    tracking: TrackingOptions = field(default_factory=TrackingOptions)

    def task(self) -> TaskSpec:
        return TaskSpec("retrieval", dataset=self.dataset, recall_at=list(self.recall_at), language=self.language,
                        **self.named_data())


@dataclass
class LinearProbeCommand(NamedDataOptions):
    """Linear probe on frozen features: L-BFGS logistic regression, C chosen on a validation split."""

    model: str
    """CLIP checkpoint (OpenAI, open_clip, HF or this project's) or a model name with local weights."""
    train: str
    """Training images (folder, .csv/.tsv, shards or builtin:<name>:train); the validation split comes from them."""
    test: str
    """Test images, labelled with the same classes."""
    classnames: str | None = None
    """Class-name file or `imagenet`; default: the training set's own names."""
    fewshot_k: int | None = None
    """k training images per class: CLIP_benchmark's few-shot probe (--probe.fewshot_* set it up); default:
    the full-data probe."""
    output: str | None = None
    """JSON results file; default eval_results/linear-probe-<test>.json."""
    probe: LinearProbeOptions = field(default_factory=LinearProbeOptions)
    tokenizer_folder: str | None = None
    """Folder with the `tokenizer.json` of a model whose weights came without one (e.g. a fit checkpoint of a
    SigLIP model); default: the one beside the weights."""
    loader: LoaderOptions = field(default_factory=LoaderOptions)
    tracking: TrackingOptions = field(default_factory=TrackingOptions)

    def task(self) -> TaskSpec:
        return TaskSpec("linear-probe", train=self.train, test=self.test, classnames=self.classnames,
                        fewshot_k=self.fewshot_k, **self.named_data())


@dataclass
class CaptionSelectionCommand(NamedDataOptions):
    """Image-caption selection (SugarCrepe, Winoground, ARO): text, image and group accuracy."""

    model: str
    """CLIP checkpoint (OpenAI, open_clip, HF or this project's) or a model name with local weights."""
    dataset: str
    """sugar_crepe/<subset> (add_att, add_obj, replace_att, replace_obj, replace_rel, swap_att, swap_obj),
    winoground, vg_relation or vg_attribution; its copy in --dataset_root. Or builtin:shape-swaps (rendered: a shape on
    a coloured background, its caption against the relation-swapped one), builtin:shape-replace-shape|colour
    (against another shape or background colour)."""
    output: str | None = None
    """JSON results file; default eval_results/image_caption_selection-<dataset>.json."""
    tokenizer_folder: str | None = None
    """Folder with the `tokenizer.json` of a model whose weights came without one; default: the one beside the
    weights."""
    loader: LoaderOptions = field(default_factory=LoaderOptions)
    tracking: TrackingOptions = field(default_factory=TrackingOptions)

    def task(self) -> TaskSpec:
        return TaskSpec("image_caption_selection", dataset=self.dataset, **self.named_data())


@dataclass
class SegmentationCommand(NamedDataOptions):
    """Zero-shot semantic segmentation (MaskCLIP): mIoU, per-class IoU, pixel accuracy (mmsegmentation's)."""

    model: str
    """CLIP checkpoint (OpenAI, open_clip, HF or this project's) or a model name with local weights."""
    dataset: str
    """builtin:shapes-seg, or voc2012, pascal_context_59, pascal_context_60 (pascal_context_59_mat /
    _60_mat: the .mat release, not the benchmark's labels), ade20k, coco_stuff, cityscapes with
    --dataset_root DIR (their released layouts)."""
    classnames: str | None = None
    """Class-name file (one per line); default: the dataset's own names."""
    templates: str = "imagenet"
    """Prompt-template file, `imagenet` (the paper's 80), `simple`, or a .json list."""
    segmentation: SegmentationSettings = field(default_factory=SegmentationSettings)
    output: str | None = None
    """JSON results file; default eval_results/segmentation-<dataset>.json."""
    tokenizer_folder: str | None = None
    """Folder with the `tokenizer.json` of a model whose weights came without one."""
    loader: LoaderOptions = field(default_factory=LoaderOptions)
    tracking: TrackingOptions = field(default_factory=TrackingOptions)

    def task(self) -> TaskSpec:
        return TaskSpec("segmentation", dataset=self.dataset, classnames=self.classnames, templates=self.templates,
                        segmentation=self.segmentation, **self.named_data())


@dataclass
class SuiteCommand(SuiteConfig):
    """A benchmark suite from YAML (-c suite.yaml): every task, one markdown + JSON table, one MLflow run."""

    tracking: TrackingOptions = field(default_factory=TrackingOptions)
    tokenizer_folder: str | None = None
    """Folder with the `tokenizer.json` of a model whose weights came without one (e.g. a fit checkpoint of a
    SigLIP model); default: the one beside the weights."""


@dataclass
class ConceptsCommand:
    """Which concepts the data taught: per-class zero-shot recall against the training captions naming each class."""

    result: str
    """A zero-shot result: `eval zeroshot`'s JSON, or a suite's JSON with --row."""
    row: str | None = None
    """The suite row to read (needed when the suite has several zero-shot rows)."""
    card: str | None = None
    """The training data's card (`curation card` JSON); default: the card whose content_hash is the run's
    data_card_hash, in --cards."""
    data_card_hash: str | None = None
    """The training data's card hash; default: the tag of the MLflow fit run whose run folder holds the model."""
    cards: str = "data_cards"
    """Folder of data cards searched by hash."""
    work_dir: str | None = None
    """The card's curation work folder (matched/ and balanced/ parquet); default: the card's lineage.work_dir."""
    rare: int = 10
    """Classes named in fewer training captions than this are listed as rarely shown."""
    output: str | None = None
    """Output stem: writes <output>.md, .json and .png; default: eval_results/concepts-<result name>."""
    tracking: TrackingOptions = field(default_factory=TrackingOptions)


COMMANDS = {
    "zeroshot": ZeroShotCommand,
    "retrieval": RetrievalCommand,
    "linear-probe": LinearProbeCommand,
    "segmentation": SegmentationCommand,
    "image_caption_selection": CaptionSelectionCommand,
    "suite": SuiteCommand,
    "concepts": ConceptsCommand,
}


def parse_command(name: str, argv: list[str]) -> Any:
    return parse_dataclass(COMMANDS[name], f"clipmodule eval {name}", argv)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", Path(text.rstrip("/")).name or text).strip("_") or "data"


def _progress():
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    transient=True)


def _load_model(model: str, tokenizer_folder: str | None = None):
    from clipmodule.api import load

    network, preprocess = load(model, device="cpu")
    if tokenizer_folder is not None:  # named by the user: it wins over a tokenizer.json found beside the weights
        network.tokenizer_folder = Path(tokenizer_folder)
    return network, preprocess


def _check_tracking(tracking: TrackingOptions) -> None:
    """A tracking URI that names no store fails before the evaluation, not after it (a new sqlite file is fine)."""
    from clipmodule.tracking.mlflow import check_store

    if tracking.enabled:
        check_store(tracking.uri, must_exist=False)


def run_single(name: str, command: Any) -> dict[str, Any]:
    """Evaluates one task; writes its JSON record and MLflow run; returns the record."""
    from clipmodule.eval.metrics import DETAIL
    from clipmodule.eval.prompts import PROMPTS
    from clipmodule.eval.results import check_output_file, make_record, print_metrics, save_and_track
    from clipmodule.eval.suite import preflight, run_task
    from clipmodule.tracking.mlflow import numeric_metrics

    spec = command.task()
    preflight(spec)
    data = spec.dataset or spec.test
    output = check_output_file(command.output or Path("eval_results") / f"{name}-{_slug(data)}.json")
    _check_tracking(command.tracking)
    probe = getattr(command, "probe", LinearProbeOptions())
    model, preprocess = _load_model(command.model, command.tokenizer_folder)
    with _progress() as progress:
        metrics = run_task(model, preprocess, spec, command.loader, probe, progress)
    prompted = metrics.pop(PROMPTS, {})  # a zero-shot task's class names (label order) and templates
    detail = metrics.pop(DETAIL, None)  # per-class results: kept in the record, beside the metrics
    record = make_record(name, command.model, metrics, dataset=data, task_spec=asdict(spec), **prompted,
                         **({DETAIL: detail} if detail else {}))
    params = {"task": name, "model": command.model, "dataset": data, **({"train": spec.train} if spec.train else {})}
    save_and_track(output, record, command.tracking, f"{name}:{_slug(data)}", params, numeric_metrics(metrics),
                   with_record=True)
    print_metrics(f"{name} · {data}", metrics)
    print(f"results: {output}")
    return record


def run_suite_command(command: SuiteCommand) -> dict[str, Any]:
    """Runs a suite (resuming: tasks finished for this model and data are not run again); writes
    <output>/<name>.md and .json and one MLflow run."""
    from clipmodule.eval.groups import group_metrics, grouped_averages, main_metric
    from clipmodule.eval.languages import language_averages, language_metrics
    from clipmodule.eval.results import (
        check_output_dir,
        make_record,
        model_fingerprint,
        model_identity,
        save_and_track,
        write_text,
    )
    from clipmodule.eval.suite import markdown_table, print_table, run_suite
    from clipmodule.tracking.mlflow import numeric_metrics

    if command.models:
        return run_collection_command(command)
    if not command.model:
        raise ClipModuleError(f"suite {command.name!r}: no model (set `model:` in the YAML or pass --model)")
    output = check_output_dir(command.output, [f"{command.name}.md", f"{command.name}.json"])
    _check_tracking(command.tracking)
    fingerprint = model_fingerprint(command.model)
    model, preprocess = _load_model(command.model, command.tokenizer_folder)
    identity = model_identity(fingerprint, model)  # the weights and what loading added: the resume key's model
    with _progress() as progress:
        run = run_suite(model, preprocess, command, progress, model_id=identity,
                        store=output / f"{command.name}.tasks", say=lambda line: print(line, file=sys.stderr))
    rows, groups = run.rows, grouped_averages(run.rows)
    title = f"{command.name}: {command.model}"
    languages = language_averages(rows, main_metric)  # each dataset's mean over the languages it ran in
    metrics: dict[str, float] = {**group_metrics(groups), **language_metrics(languages)}
    for row in rows:
        metrics.update(numeric_metrics(row["metrics"], prefix=f"{row['name']}/"))
    params = {"task": "suite", "suite": command.name, "model": command.model, "model_sha": fingerprint,
              "tasks": ", ".join(row["name"] for row in rows), "missing": ", ".join(run.missing) or "-",
              "failed": ", ".join(run.failed) or "-"}
    record = make_record("suite", command.model, {row["name"]: row["metrics"] for row in rows}, suite=command.name,
                         model_sha=fingerprint, model_id=identity, groups=groups, languages=languages,
                         missing=run.missing, failed=run.failed, reused=run.reused, changed=run.changed,
                         rows=[{key: value for key, value in row.items() if key != "metrics"} for row in rows])
    write_text(output / f"{command.name}.md", markdown_table(rows, title, run.missing, run.failed))
    save_and_track(output / f"{command.name}.json", record, command.tracking, f"suite:{command.name}", params, metrics,
                   with_record=True)
    if rows:
        print_table(rows, title)
    if run.missing:
        print(f"not run, data missing: {', '.join(run.missing)}", file=sys.stderr)
    if run.failed:
        print(f"not run, data refused (damaged or inconsistent): {', '.join(run.failed)}", file=sys.stderr)
    print(f"results: {output / (command.name + '.md')}, {output / (command.name + '.json')}")
    return record


def run_collection_command(command: SuiteCommand) -> dict[str, Any]:
    """Runs the suite for every model of `command.models` (`eval.collection.run_collection`)."""
    from clipmodule.eval.collection import run_collection

    if command.model:
        raise ClipModuleError(f"suite {command.name!r}: give `model` or `models`, not both")
    _check_tracking(command.tracking)
    return run_collection(command, lambda model: _load_model(model, command.tokenizer_folder), _progress)


def _card_of(command: ConceptsCommand, model: str | None) -> Path:
    from clipmodule.eval.concepts import find_card
    from clipmodule.tracking.lineage import data_card_hash_for

    if command.card is not None:
        return Path(command.card)
    content_hash = command.data_card_hash or (data_card_hash_for(command.tracking, model) if model else None)
    if not content_hash:
        raise ClipModuleError(f"{command.result}: no MLflow fit run holding model {model} names a data_card_hash "
                              f"(tracking {command.tracking.uri}); pass --card or --data_card_hash")
    return find_card(command.cards, content_hash)


def run_concepts_command(command: ConceptsCommand) -> dict[str, Any]:
    """Reads the result, follows the model's data card, counts class names before/after balancing, fits, writes."""
    from clipmodule.eval.concepts import class_counts, concept_markdown, concept_plot, counts_report, zeroshot_result
    from clipmodule.eval.results import check_output_file, write_json, write_text

    result = zeroshot_result(command.result, command.row)
    stem = Path(command.output or Path("eval_results") / f"concepts-{_slug(str(result['name'] or 'result'))}")
    check_output_file(stem.with_suffix(".json"))
    card = _card_of(command, result["model"])
    report = counts_report(result, class_counts(card, command.work_dir, result["classnames"]), command.rare)
    report["card"] = str(card)
    write_json(stem.with_suffix(".json"), report)
    write_text(stem.with_suffix(".md"), concept_markdown(report, card))
    concept_plot(report, stem.with_suffix(".png"))
    fit = report["fit"]
    print(f"never shown: {len(report['never'])}, rarely: {len(report['rare'])}; "
          + (f"slope {100 * fit['slope']:.1f} points per decade, r {fit['pearson_r']:.2f}" if fit else "no fit"))
    print(f"results: {stem.with_suffix('.md')}, .json, .png")
    return report


def _runner(name: str):
    def run(argv: list[str]) -> int:
        command = parse_command(name, argv)
        if name == "concepts":
            run_concepts_command(command)
        elif name == "suite":
            run_suite_command(command)
        else:
            run_single(name, command)
        return 0

    return run


def main(argv: list[str]) -> int:
    commands = [Command(name, command.__doc__.splitlines()[0], _runner(name)) for name, command in COMMANDS.items()]
    return dispatch("clipmodule eval", commands, argv)
