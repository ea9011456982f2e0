"""The vectors the unsafe-concept filter compares: the concept prompts' text embeddings and each sample's image
embedding (from the embedding folder, by shard and key)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from clipformats.embeddings import normalise
from curation.embedding_rows import load_rows
from curation.errors import CurationError


def concept_vectors(config) -> np.ndarray:
    """[concepts, d] unit rows, in the order of `config.concepts`."""
    prompts = list(config.concepts)
    if config.concept_embeddings is not None:
        try:
            vectors = np.load(config.concept_embeddings, allow_pickle=False)
        except (OSError, ValueError) as error:
            raise CurationError(f"{config.concept_embeddings}: cannot read concept embeddings ({error})") from None
        if vectors.ndim != 2 or len(vectors) != len(prompts):
            raise CurationError(f"{config.concept_embeddings}: {vectors.shape} is not one row per concept "
                                f"({len(prompts)})")
        return normalise(vectors)
    from curation.stages.embed.embedding import load_embedder

    embedder = load_embedder(config.embedder)
    if not hasattr(embedder, "embed_text"):
        raise CurationError(f"unsafe.embedder {config.embedder!r} has no embed_text: give concept_embeddings")
    embedder.setup(config.model, "cpu", 64, 0, 1)
    return normalise(embedder.embed_text(prompts))


def image_vectors(shards: list[Path], embeddings: Path) -> dict[tuple[str, str], np.ndarray]:
    """(shard file name, key) -> unit image embedding, for every embedded sample of `shards`."""
    rows = load_rows(shards, embeddings, text=False)
    return {(shard, key): rows.image[i] for i, (shard, key) in enumerate(zip(rows.shard, rows.key, strict=True))
            if rows.embedded[i]}
