"""`curation unsafe`: drop samples whose image embedding is close to a concept prompt's text embedding (cosine at
or above that concept's threshold), as LAION-5B's CLIP-based tags and MetaCLIP 2's safety pass compare images with
concept texts. The image embeddings come from `curation embed`; the prompts are embedded by the same model (the
embedder plugin's `embed_text`), or read from `concept_embeddings`.

Limits: CLIP similarity to a prompt is a weak classifier; a threshold is specific to the model and the prompt
wording, and must be chosen on labelled examples (the stats' precision/recall against `truth` are for that);
it inherits CLIP's biases, misses what the prompts do not name, and is no substitute for a trained safety
classifier or for review.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from curation.config.checks import require
from curation.stage import HashCache
from curation.stages.sieve import Decide, content_hash, sieve_stage


@dataclass
class UnsafeConfig:
    """Which concepts are dropped, and how close is too close."""

    embeddings: Path = Path("work/embeddings")
    """Embedding folder of the input shards (`curation embed`)."""
    concepts: list[str] = field(default_factory=list)
    """Concept prompts (e.g. "a photo of a gun"): a sample whose image embedding has at least the concept's
    threshold cosine with the prompt's text embedding is dropped."""
    thresholds: list[float] = field(default_factory=lambda: [0.25])
    """Cosine threshold of each concept, in order, or one for all (CLIP ViT-B cosines of matching image-text
    pairs are about 0.25-0.35; set them on labelled examples)."""
    model: str | None = None
    """The model that made `embeddings` (any `clipmodule.load` model), to embed the prompts; not needed with
    concept_embeddings."""
    embedder: str = "clipmodule.embedding:ShardEmbedder"
    """The embedder plugin, `module:Class`, whose `embed_text` embeds the prompts."""
    concept_embeddings: Path | None = None
    """Instead of model: a .npy of the prompts' L2-normalised text embeddings, one row per concept, in order."""
    truth: Path | None = None
    """Parquet table (shard, key) of samples that should be dropped (planted): the stats report precision/recall."""

    def __post_init__(self) -> None:
        self.embeddings = Path(self.embeddings)
        self.concept_embeddings = Path(self.concept_embeddings) if self.concept_embeddings is not None else None
        self.truth = Path(self.truth) if self.truth is not None else None
        require(bool(self.concepts), "unsafe.concepts: give at least one concept prompt")
        require(len(self.thresholds) in (1, len(self.concepts)), f"unsafe.thresholds: give one, or one per concept "
                f"({len(self.concepts)}), got {len(self.thresholds)}")
        require(all(-1.0 <= t <= 1.0 for t in self.thresholds), "unsafe.thresholds are cosines in [-1, 1]")
        require((self.model is None) != (self.concept_embeddings is None),
                "unsafe: give model (to embed the prompts) or concept_embeddings, one of them")


@dataclass
class UnsafePaths:
    shards: list[str] = field(default_factory=lambda: ["work/shards"])
    """Input shards: webdataset .tar files or folders of them."""
    out: Path = Path("work/unsafe")
    """Folder for the kept samples' shards (same names); <out>.stats.json beside it."""
    overwrite: bool = False
    """Replace an output made with other settings (an up-to-date output is kept as it is)."""


@dataclass(frozen=True)
class UnsafeSieve:
    config: UnsafeConfig
    name: str = "unsafe"

    def build(self, shards: list[Path]) -> Decide:
        from curation.stages.unsafe.concepts import concept_vectors, image_vectors

        names, given = self.config.concepts, self.config.thresholds
        concepts, thresholds = concept_vectors(self.config), given * len(names) if len(given) == 1 else given
        images = image_vectors(shards, self.config.embeddings)

        def decide(meta: dict[str, Any], members: Any) -> str | None:
            vector = images.get((meta["shard"], meta["key"]))
            if vector is None:
                return None  # no embedding (no decodable image): nothing to compare; counted as kept
            cosines = concepts @ vector
            hit = next((i for i, c in enumerate(cosines) if c >= thresholds[i]), None)
            return None if hit is None else f"unsafe: {names[hit]}"

        return decide

    def side_inputs(self, shards: list[Path], hashes: HashCache | None = None) -> dict[str, str | None]:
        from clipformats.model_files import model_files
        from curation.embedding_rows import embedding_files

        given = self.config.concept_embeddings
        model = Path(self.config.model) if given is None else None
        prompts = [given] if given is not None else [model] if model.is_file() else \
            model_files(model) if model.is_dir() else []  # a folder: the files the loader reads
        return {"embeddings": content_hash(embedding_files(self.config.embeddings, shards), hashes),
                "concepts": content_hash(prompts, hashes) if prompts else None}  # None: a model by name


STAGE = sieve_stage("unsafe", "drop samples whose image is close to a concept prompt (CLIP similarity)",
                    UnsafePaths, UnsafeConfig, UnsafeSieve, "Unsafe concepts", "kept by the unsafe-concept filter",
                    needs=("embed",), in_build=lambda config, step: replace(config, embeddings=step.outputs["embed"]))
