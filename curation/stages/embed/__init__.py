"""`curation embed`: image and caption embeddings of shards with a CLIP model, one part per shard."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from curation.config import EmbedConfig
from curation.stages.spec import BuildStep, CardSection, StageSpec


@dataclass
class EmbedPaths:
    shards: list[str] = field(default_factory=lambda: ["work/shards"])
    """Shards to embed: webdataset .tar files, folders of them or brace patterns (`curation download` output)."""
    out: Path = Path("work/embeddings")
    """Folder for img_emb/, text_emb/ and metadata/ (one part per shard); <out>.stats.json beside it."""
    overwrite: bool = False
    """Replace an output made with other settings (an up-to-date output is kept as it is)."""


def run(settings: EmbedConfig, paths: EmbedPaths) -> None:
    from curation.stages.embed.embedding import run_embed

    run_embed(settings, paths.shards, paths.out, paths.overwrite)


def build(step: BuildStep) -> None:
    from curation.stages.embed.embedding import run_embed

    run_embed(step.settings, [str(step.shards)], step.out, step.overwrite)


def section(stats: dict[str, Any]) -> dict[str, Any]:
    return {"model": stats["model"], "dtype": stats["dtype"], "rows_in": stats["rows_in"],
            "rows_out": stats["rows_out"], "skipped": stats.get("skipped", {})}


def markdown(e: dict[str, Any]) -> str:
    model = e["model"]
    skipped = "; ".join(f"{n:,} {r}" for r, n in e["skipped"].items()) or "none"
    return (f"## Embeddings\n\n{e['rows_out']:,} of {e['rows_in']:,} samples embedded with `{model.get('name')}` "
            f"(width {model.get('embed_dim', '?')}, stored {e['dtype']}, L2-normalised); skipped: {skipped}.")


STAGE = StageSpec(name="embed", help="image and caption embeddings of shards with a CLIP model (one part per shard)",
                  paths=EmbedPaths, settings=EmbedConfig, run=run, output="embeddings", build=build,
                  reads_download=True, card=CardSection("embeddings", section, markdown))
