"""`curation dedup`: drop near-duplicate samples by image embedding (SemDeDup)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from curation.card_markdown import table, truth
from curation.config import DedupConfig
from curation.stages.spec import BuildStep, CardSection, StageSpec

HEAD = 10


@dataclass
class DedupPaths:
    shards: list[str] = field(default_factory=lambda: ["work/filtered"])
    """Input shards: webdataset .tar files or folders of them."""
    embeddings: Path = Path("work/embeddings")
    """Embedding folder covering those shards' samples (`curation embed`; the unfiltered shards' is fine)."""
    out: Path = Path("work/deduplicated")
    """Folder for the deduplicated shards (same names); <out>.drops.parquet, <out>.png and <out>.stats.json
    beside it."""
    overwrite: bool = False
    """Replace an output made with other settings (an up-to-date output is kept as it is)."""


def run(settings: DedupConfig, paths: DedupPaths) -> None:
    from curation.stages.dedup.semdedup import run_dedup

    run_dedup(settings, paths.shards, paths.embeddings, paths.out, paths.overwrite)


def build(step: BuildStep) -> None:
    from curation.stages.dedup.semdedup import run_dedup

    run_dedup(step.settings, [str(step.shards)], step.outputs["embed"], step.out, step.overwrite)


def section(stats: dict[str, Any]) -> dict[str, Any]:
    return {**{k: stats[k] for k in ("threshold", "clusters", "kmeans_backend", "rows_in", "rows_kept",
                                     "rows_dropped", "truth", "drop_list", "thumbnails")},
            "top_pairs": stats["top_pairs"][:HEAD]}


def markdown(d: dict[str, Any]) -> str:
    pairs = table(["dropped", "duplicate of", "cosine"],
                  [[f"{p['shard']}:{p['key']}", f"{p['duplicate_of_shard']}:{p['duplicate_of_key']}",
                    f"{p['cosine']:.4f}"] for p in d["top_pairs"]])
    picture = f"\n\n![closest near-duplicates]({d['thumbnails']})" if d["thumbnails"] else ""
    return (f"## Deduplication\n\n{d['rows_dropped']:,} of {d['rows_in']:,} samples dropped as near-duplicates "
            f"(SemDeDup: {d['clusters']:,} k-means clusters, a sample whose image-embedding cosine with an "
            f"earlier one of its cluster is above {d['threshold']} is dropped; the first by shard and key is "
            "kept)" + truth(d.get("truth")) + f". Drop list: "
            f"`{d['drop_list']}`." + (f"\n\n### Closest pairs\n\n{pairs}{picture}" if d["top_pairs"] else ""))


STAGE = StageSpec(name="dedup", help="drop near-duplicate samples by image embedding (SemDeDup)", paths=DedupPaths,
                  settings=DedupConfig, run=run, output="deduplicated", build=build, writes_shards=True,
                  needs=("embed",),
                  card=CardSection("dedup", section, markdown,
                                   summary=("deduplicated_images", "kept by dedup", "rows_kept"),
                                   plot=("thumbnails", "dedup")))
