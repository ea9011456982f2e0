"""What a curation stage declares, once: its options, its settings, how it runs alone and inside `build`, and its
section of the data card. `curation.stages` keeps them in build order; the CLI's subcommands, `build`'s sequence,
the dataset YAML's keys and the card are all read from there.

A stage module stays light (dataclasses and small functions): its run functions import the stage's heavy
implementation when called, so `curation --help` answers without importing pyarrow, img2dataset or faiss.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class BuildStep:
    """What `curation build` hands a stage: the dataset's settings and where things are in its work folder."""

    dataset: Any
    """The whole dataset config (the stage's own settings are `settings`)."""
    settings: Any
    """This stage's settings (the dataset YAML's key named like the stage)."""
    out: Path
    """This stage's output in the work folder."""
    shards: Path | None
    """The shards the stage reads: the download's, or the last shard-writing stage's (None before download)."""
    outputs: Mapping[str, Path]
    """Every build stage's output in the work folder, by stage name (e.g. the embeddings the filter joins)."""
    overwrite: bool


@dataclass(frozen=True)
class CardSection:
    """How a stage appears on the data card."""

    key: str
    """The card's JSON key for the section (e.g. `filter`, `decontamination`)."""
    section: Callable[[dict[str, Any]], dict[str, Any]]
    """The section, from the stage's finished stats."""
    markdown: Callable[[dict[str, Any]], str]
    """The section for people (a `## ...` block), from the card's section."""
    summary: tuple[str, str, str] | None = None
    """(summary key, label in the summary table, the section's field that gives the count), if any."""
    plot: tuple[str, str] | None = None
    """(the section's field naming a PNG, the suffix of its copy beside the card), if any."""


@dataclass(frozen=True)
class StageSpec:
    """One curation stage, declared once."""

    name: str
    """The subcommand (`curation <name>`), the dataset YAML's key of its settings, its stats' name."""
    help: str
    """One line for `curation --help`."""
    paths: type
    """Dataclass of the subcommand's own options: inputs, output, --overwrite."""
    run: Callable[[Any, Any], Any]
    """run(settings, paths): the stage as its subcommand runs it (settings is None when `settings` is None)."""
    settings: type | None = None
    """Dataclass of the stage's settings (shared by its subcommand and the dataset YAML)."""
    output: str | None = None
    """Its output's name inside a build's work folder; None: `build` never runs it (e.g. `index`)."""
    required: bool = False
    """`build` always runs it (queries → download); otherwise only when the dataset YAML names it."""
    build: Callable[[BuildStep], Any] | None = None
    """How `build` runs it."""
    writes_shards: bool = False
    """Its output is shards that the next stage reads (and, if last, the dataset the card hashes)."""
    reads_download: bool = False
    """It reads the download's shards whatever ran before it (embed: every later stage joins by key)."""
    needs: tuple[str, ...] = ()
    """Stages a dataset YAML must also name for this one to run."""
    check: Callable[[Any], None] | None = None
    """Extra checks of the whole dataset config when it names this stage (one-line CurationError)."""
    card: CardSection | None = None
    """Its section of the data card (optional stages)."""

    def options(self) -> tuple[type, ...]:
        return (self.paths,) if self.settings is None else (self.paths, self.settings)
