"""`curation build`: every stage of a dataset config in order; finished stages are skipped.

queries → match → balance → download, then the optional stages the YAML names: embed (the downloaded shards'
embeddings, which every later stage joins by shard and key) → filter → dedup → decontaminate, each reading the
shards the stage before it wrote; then the card, whose lineage lists them and whose content hash is that of
the last stage's shards."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from curation.balancing import run_balance
from curation.cards import write_card
from curation.config import DatasetConfig, WorkLayout
from curation.decontaminate import run_decontaminate
from curation.dedup import run_dedup
from curation.download import run_download
from curation.embed import run_embed
from curation.filter import run_filter
from curation.matching import run_match
from curation.queries import run_queries


def build(config: DatasetConfig, overwrite: bool = False) -> dict[str, Any]:
    """Every stage of `config` in `config.work_dir`; returns the card."""
    layout = WorkLayout(config.work_dir)
    run_queries(config.queries, layout.queries, overwrite)
    run_match(config.match, layout.queries, config.captions, layout.matched, overwrite)
    run_balance(config.balance, layout.matched, layout.balanced, overwrite)
    run_download(config.download, layout.balanced, layout.shards, overwrite)
    stages = run_optional_stages(config, layout, overwrite)
    return write_card(config.name, layout.work_dir, config.cards_dir, stages=stages)


def run_optional_stages(config: DatasetConfig, layout: WorkLayout, overwrite: bool) -> tuple[str, ...]:
    """embed → filter → dedup → decontaminate, those the config names; returns their names in order."""
    ran: list[str] = []
    shards: Path = layout.shards
    if config.embed is not None:
        run_embed(config.embed, [str(layout.shards)], layout.embeddings, overwrite)
        ran.append("embed")
    if config.filter is not None:
        run_filter(config.filter, [str(shards)], layout.embeddings, layout.filtered, overwrite)
        shards = layout.filtered
        ran.append("filter")
    if config.dedup is not None:
        run_dedup(config.dedup, [str(shards)], layout.embeddings, layout.deduplicated, overwrite)
        shards = layout.deduplicated
        ran.append("dedup")
    if config.decontaminate is not None:
        embeddings = layout.embeddings if config.decontaminate.eval_embeddings else None
        run_decontaminate(config.decontaminate, config.eval_sets, [str(shards)], layout.decontaminated, overwrite,
                          embeddings=embeddings)
        ran.append("decontaminate")
    return tuple(ran)
