"""`curation index`: a faiss kNN index of an embedding folder, its recall measured (not part of `build`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from curation.config import IndexConfig
from curation.stages.spec import StageSpec


@dataclass
class IndexPaths:
    embeddings: Path = Path("work/embeddings")
    """Embedding folder (`curation embed` or `clipmodule predict` output)."""
    out: Path = Path("work/index")
    """Folder for the faiss index, its rows and settings; <out>.stats.json (recall, build time) beside it."""
    overwrite: bool = False
    """Replace an output made with other settings (an up-to-date output is kept as it is)."""


def run(settings: IndexConfig, paths: IndexPaths) -> None:
    from curation.stages.index.knn_index import run_index

    run_index(settings, paths.embeddings, paths.out, paths.overwrite)


STAGE = StageSpec(name="index", help="a faiss kNN index of an embedding folder, its recall measured",
                  paths=IndexPaths, settings=IndexConfig, run=run)
