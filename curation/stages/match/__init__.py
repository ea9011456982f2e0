"""`curation match`: attach to each caption row the ids of the queries it contains."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from curation.config import MatchConfig
from curation.stages.spec import BuildStep, StageSpec


@dataclass
class MatchPaths:
    captions: list[str]
    """Caption tables (parquet, csv, tsv, jsonl; .gz/.bz2/.zst too): files, folders or glob patterns."""
    queries: Path = Path("work/queries.parquet")
    """Query list written by `curation queries`."""
    out: Path = Path("work/matched")
    """Folder for the matched shards (one per input table); <out>.counts.parquet and <out>.stats.json beside it."""
    overwrite: bool = False
    """Replace an output made with other settings (an up-to-date output is kept as it is)."""


def run(settings: MatchConfig, paths: MatchPaths) -> None:
    from curation.stages.match.matching import run_match

    run_match(settings, paths.queries, paths.captions, paths.out, paths.overwrite)


def build(step: BuildStep) -> None:
    from curation.stages.match.matching import run_match

    run_match(step.settings, step.outputs["queries"], step.dataset.captions, step.out, step.overwrite)


STAGE = StageSpec(name="match", help="attach to each caption row the ids of the queries it contains",
                  paths=MatchPaths, settings=MatchConfig, run=run, output="matched", required=True, build=build)
