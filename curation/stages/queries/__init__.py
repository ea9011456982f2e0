"""`curation queries`: the query list (WordNet lemmas, frequent unigrams, high-PMI bigrams, titles)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from curation.config import QueriesConfig
from curation.errors import CurationError
from curation.stages.spec import BuildStep, StageSpec


@dataclass
class QueriesPaths:
    out: str = "work/queries.parquet"
    """Query list to write (a file); its stats go to <stem>.stats.json beside it."""
    overwrite: bool = False
    """Replace an output made with other settings (an up-to-date output is kept as it is)."""


def run(settings: QueriesConfig, paths: QueriesPaths) -> None:
    from curation.stages.queries.query_list import run_queries

    if paths.out.endswith(("/", os.sep)):  # Path() would drop the slash and write a file named like the folder
        raise CurationError(f"{paths.out}: --out must name a file (e.g. {paths.out}queries.parquet), not a folder")
    run_queries(settings, Path(paths.out), paths.overwrite)


def build(step: BuildStep) -> None:
    from curation.stages.queries.query_list import run_queries

    run_queries(step.settings, step.out, step.overwrite)


STAGE = StageSpec(name="queries", help="build the query list (WordNet, unigrams, bigrams, titles)",
                  paths=QueriesPaths, settings=QueriesConfig, run=run, output="queries.parquet", required=True,
                  build=build)
