"""`curation filter`: keep samples by CLIP score, caption and image size, or image clusters near a target set."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from curation.card_markdown import table
from curation.config import FilterConfig
from curation.stages.spec import BuildStep, CardSection, StageSpec


@dataclass
class FilterPaths:
    shards: list[str] = field(default_factory=lambda: ["work/shards"])
    """Input shards: webdataset .tar files or folders of them (`curation download` output)."""
    embeddings: Path = Path("work/embeddings")
    """Embedding folder of those shards (`curation embed`)."""
    out: Path = Path("work/filtered")
    """Folder for the filtered shards (same names); <out>.rows.parquet (every sample's decision), <out>.png (CLIP
    score histogram) and <out>.stats.json beside it."""
    overwrite: bool = False
    """Replace an output made with other settings (an up-to-date output is kept as it is)."""


def run(settings: FilterConfig, paths: FilterPaths) -> None:
    from curation.stages.filter.filtering import run_filter

    run_filter(settings, paths.shards, paths.embeddings, paths.out, paths.overwrite)


def build(step: BuildStep) -> None:
    from curation.stages.filter.filtering import run_filter

    run_filter(step.settings, [str(step.shards)], step.outputs["embed"], step.out, step.overwrite)


def section(stats: dict[str, Any]) -> dict[str, Any]:
    return {k: stats[k] for k in ("rows_in", "rows_kept", "rows_dropped", "dropped_by_reason", "filters",
                                  "clip_score", "image_clustering", "rows_file", "histogram_png")}


def markdown(f: dict[str, Any]) -> str:
    reasons = table(["dropped for", "samples"], [[r, n] for r, n in f["dropped_by_reason"].items()]) \
        if f["dropped_by_reason"] else "Nothing dropped."
    score = f["clip_score"]
    cut = f"; score cut {score['threshold']:.4f}" if score.get("threshold") is not None else ""
    settings = ", ".join(f"{k} = {v}" for k, v in f["filters"].items())
    clusters = f.get("image_clustering")
    clustered = (f" Image-based clustering: {clusters['clusters']:,} clusters, {clusters['clusters_targeted']:,} "
                 f"nearest to the {clusters['target_embeddings']:,} target embeddings." if clusters else "")
    return (f"## Filter\n\nKept {f['rows_kept']:,} of {f['rows_in']:,} samples ({settings}). A dropped sample is "
            f"counted under the first filter it fails.{clustered} CLIP score (cosine of image and caption "
            f"embeddings): mean {score['mean']:.3f}, median {score['p50']:.3f}, p5 {score['p5']:.3f}, "
            f"p95 {score['p95']:.3f}{cut}. Every sample's decision: `{f['rows_file']}`.\n\n{reasons}\n\n"
            f"![CLIP-score histogram]({f['histogram_png']})")


STAGE = StageSpec(name="filter", help="keep samples by CLIP score, caption and image size, or image clusters near "
                  "a target set", paths=FilterPaths, settings=FilterConfig, run=run, output="filtered", build=build,
                  writes_shards=True, needs=("embed",),
                  card=CardSection("filter", section, markdown,
                                   summary=("filtered_images", "kept by the filter", "rows_kept"),
                                   plot=("histogram_png", "filter")))
