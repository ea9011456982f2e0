"""`curation decontaminate`: drop training samples that are near-copies of evaluation images."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from curation.card_markdown import table, truth
from curation.config import DecontaminateConfig
from curation.errors import CurationError
from curation.stages.spec import BuildStep, CardSection, StageSpec

SECTION_KEYS = ("hash", "hash_bits", "threshold", "eval_sets", "eval_images", "samples_in", "samples_dropped",
                "samples_kept", "undecodable_kept", "distance_histogram", "top_matches", "drop_list", "thumbnails",
                "content_hash")


@dataclass
class DecontaminatePaths:
    eval: list[str]
    """Evaluation sets: folders of images (searched recursively) or webdataset .tar files."""
    shards: list[str] = field(default_factory=lambda: ["work/shards"])
    """Training shards: webdataset .tar files or folders of them (`curation download` output)."""
    out: Path = Path("work/decontaminated")
    """Folder for the cleaned shards (same names); <out>.drops.parquet, <out>.png and <out>.stats.json beside it."""
    embeddings: Path | None = None
    """Embedding folder of the training shards' samples; needed with --eval_embeddings (the embedding pass)."""
    overwrite: bool = False
    """Replace an output made with other settings (an up-to-date output is kept as it is)."""


def run(settings: DecontaminateConfig, paths: DecontaminatePaths) -> None:
    from curation.stages.decontaminate.decontamination import run_decontaminate

    run_decontaminate(settings, paths.eval, paths.shards, paths.out, paths.overwrite, embeddings=paths.embeddings)


def build(step: BuildStep) -> None:
    from curation.stages.decontaminate.decontamination import run_decontaminate

    embeddings = step.outputs["embed"] if step.settings.eval_embeddings else None
    run_decontaminate(step.settings, step.dataset.eval_sets, [str(step.shards)], step.out, step.overwrite,
                      embeddings=embeddings)


def check(dataset: Any) -> None:
    if not dataset.eval_sets:
        raise CurationError("decontaminate: give eval_sets to compare with")
    if dataset.decontaminate.eval_embeddings and getattr(dataset, "embed", None) is None:
        raise CurationError("decontaminate.eval_embeddings: needs the embed stage (give embed: {model: ...})")


def section(stats: dict[str, Any]) -> dict[str, Any]:
    later = {k: stats.get(k) for k in ("dropped_by_pass", "embedding_pass", "truth")}  # absent in older stats
    return {**{k: stats[k] for k in SECTION_KEYS}, "over_pixel_limit_kept": stats.get("over_pixel_limit_kept", 0),
            **later}


def markdown(d: dict[str, Any]) -> str:
    sets = table(["evaluation set", "images", "training samples dropped"],
                 [[s["source"], s["images"], s["training_samples_dropped"]] for s in d["eval_sets"]])
    top = table(["shard", "key", "distance", "evaluation image"],
                [[m["shard"], m["key"], m["distance"], m["eval_image"]] for m in d["top_matches"][:10]])
    picture = f"\n\n![closest matches]({d['thumbnails']})" if d["thumbnails"] else ""
    return (f"## Decontamination\n\n{d['samples_dropped']:,} of {d['samples_in']:,} training samples dropped: "
            f"their {d['hash']} ({d['hash_bits']} bits) is within Hamming distance {d['threshold']} of an "
            f"evaluation image's" + _embedding_pass(d) + truth(d.get("truth")) +
            f". The shards below are the cleaned ones; the drop list is `{d['drop_list']}`."
            f"\n\n{sets}" + (f"\n\n### Closest matches\n\n{top}{picture}" if d["top_matches"] else ""))


def _embedding_pass(d: dict[str, Any]) -> str:
    e = d.get("embedding_pass")
    if not e:
        return ""
    return (f", or their image embedding has cosine >= {e['threshold']} with one of {e['eval_rows']:,} evaluation "
            f"embeddings ({e['samples_dropped_only_by_embedding']:,} caught by the embedding pass alone)")


STAGE = StageSpec(name="decontaminate", help="drop training samples that are near-copies of evaluation images",
                  paths=DecontaminatePaths, settings=DecontaminateConfig, run=run, output="decontaminated",
                  build=build, writes_shards=True, check=check,
                  card=CardSection("decontamination", section, markdown,
                                   summary=("decontaminated_images", "kept by decontamination", "samples_kept"),
                                   plot=("thumbnails", "decontamination")))
