"""`curation build`: every stage of a dataset config in the registry's order; finished stages are skipped.

queries → match → balance → download always, then the optional stages the YAML names (embed: the downloaded
shards' embeddings, which every later stage joins by shard and key → filter → dedup → decontaminate), each
reading the shards the last shard-writing stage before it wrote; then the card, whose lineage lists them and whose
content hash is that of the last stage's shards."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from curation.cards import write_card
from curation.stages import BuildStep, registry


def build(config: Any, overwrite: bool = False) -> dict[str, Any]:
    """Every stage `config` (a `dataset_config_type()` instance) names, in `config.work_dir`; returns the card."""
    stages = run_stages(config, overwrite)
    return write_card(config.name, config.work_dir, config.cards_dir, stages=stages)


def run_stages(config: Any, overwrite: bool) -> tuple[str, ...]:
    """The build stages in order (the required ones, and the optional ones `config` names); returns the names of
    the optional ones that ran."""
    work_dir = Path(config.work_dir)
    outputs = {stage.name: work_dir / stage.output for stage in registry().built()}
    downloaded = shards = None
    ran: list[str] = []
    for stage in registry().built():
        settings = getattr(config, stage.name, None)
        if settings is None and not stage.required:
            continue
        source = downloaded if stage.reads_download else shards
        stage.build(BuildStep(dataset=config, settings=settings, out=outputs[stage.name],
                              shards=source, outputs=outputs, overwrite=overwrite))
        if stage.writes_shards:
            shards = outputs[stage.name]
            downloaded = downloaded or shards
        if not stage.required:
            ran.append(stage.name)
    return tuple(ran)
