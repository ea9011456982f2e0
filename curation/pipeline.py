"""`curation build`: every stage of a dataset config in order; finished stages are skipped."""

from __future__ import annotations

from typing import Any

from curation.balancing import run_balance
from curation.cards import write_card
from curation.config import DatasetConfig, WorkLayout
from curation.download import run_download
from curation.matching import run_match
from curation.queries import run_queries


def build(config: DatasetConfig, overwrite: bool = False) -> dict[str, Any]:
    """queries → match → balance → download → card, in `config.work_dir`; returns the card."""
    layout = WorkLayout(config.work_dir)
    run_queries(config.queries, layout.queries, overwrite)
    run_match(config.match, layout.queries, config.captions, layout.matched, overwrite)
    run_balance(config.balance, layout.matched, layout.balanced, overwrite)
    run_download(config.download, layout.balanced, layout.shards, overwrite)
    return write_card(config.name, layout.work_dir, config.cards_dir)
