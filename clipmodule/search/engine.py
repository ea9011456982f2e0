"""Search as a library: a `curation index` folder and the model of its embeddings, loaded once, answering text,
image and embedding queries. `clipmodule search` calls it for one query; a long-lived service keeps one engine and
calls it for every query (the model is loaded at the first text or image query, never again).

A hit is a dict: rank (1 = nearest), score (the cosine of the query and the sample: the index holds unit-length
embeddings and every query is normalised), and the index's row for the sample (shard, key, caption, ...).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from clipmodule.errors import ClipModuleError

Hit = dict[str, Any]


def open_index(folder: str | Path) -> Any:
    """The index folder `curation index` wrote (`clipformats.knn`), or a one-line error naming it."""
    from clipformats.knn import IndexFilesError, read_index

    try:
        return read_index(folder)
    except IndexFilesError as error:
        raise ClipModuleError(str(error)) from None


class SearchEngine:
    """Nearest samples of one index to text, images or embeddings.

    `model`: the query model (default: the one the index's embeddings record; another model must be the same for
    scores to mean anything). `shards`: shard files or folders for thumbnails, beside those the index records."""

    def __init__(self, index: str | Path, model: str | None = None, device: str = "cpu",
                 shards: Sequence[str] = ()) -> None:
        self.folder = str(index)
        self.index = open_index(index)
        recorded = self.index.info.get("model") or {}
        self.model = model or recorded.get("path") or recorded.get("name")
        self.model_given = model is not None
        self.weights_sha256 = recorded.get("weights_sha256")
        """The sha256 of the weights that embedded the index (`curation embed` records it); a query model must
        hash alike, else its queries land in another embedding space."""
        self.device = device
        self.extra_shards = list(shards)
        self._embedder: Any = None

    @property
    def dim(self) -> int:
        return int(self.index.info["dim"])

    def _model_embedder(self) -> Any:
        if self._embedder is None:
            self._embedder = self._load_embedder()
        return self._embedder

    def _load_embedder(self) -> Any:
        if not self.model:
            raise ClipModuleError(f"{self.folder}: the index does not record its model (not `curation embed` "
                                  "output); pass --model")
        if self.weights_sha256 is None and not self.model_given:
            raise ClipModuleError(f"{self.folder}: records its model by path only, not its weights' hash (made "
                                  "before hashes were recorded): re-run `curation embed` and `curation index`, or "
                                  "pass --model")
        from clipformats.embeddings import EmbedderError
        from clipmodule.embedding import ShardEmbedder

        embedder = ShardEmbedder()
        try:
            described = embedder.setup(self.model, device=self.device)
        except EmbedderError as error:
            raise ClipModuleError(str(error)) from None
        if self.weights_sha256 is not None and described["weights_sha256"] != self.weights_sha256:
            raise ClipModuleError(f"model {self.model}: its weights (sha256 {described['weights_sha256'][:12]}) are "
                                  f"not those that embedded {self.folder} (sha256 {self.weights_sha256[:12]}); the "
                                  "query would land in another space: pass that model with --model")
        return embedder

    def by_text(self, text: str, k: int = 16) -> list[Hit]:
        """The k samples nearest to a caption."""
        if not text.strip():
            raise ClipModuleError("the text query is empty")
        return self.by_embedding(self._model_embedder().embed_text([text]), k, source=f"model {self.model}")

    def by_image(self, image: Any, k: int = 16) -> list[Hit]:
        """The k samples nearest to an image (a PIL image, or a path to an image file)."""
        if isinstance(image, (str, Path)):
            from clipmodule.embedding import read_image_file

            image = read_image_file(str(image))
        return self.by_embedding(self._model_embedder().embed_images([image]), k, source=f"model {self.model}")

    def by_embedding(self, vector: Any, k: int = 16, source: str = "the query embedding") -> list[Hit]:
        """The k samples nearest to an embedding ([d] or [1, d]; normalised here)."""
        if k < 1:
            raise ClipModuleError(f"-k must be >= 1, got {k}")
        query = np.asarray(vector, dtype=np.float32).reshape(1, -1)
        if query.shape[1] != self.dim:
            raise ClipModuleError(f"{source}: {query.shape[1]}-dimensional embeddings, the index holds "
                                  f"{self.dim}-dimensional ones (another model made it)")
        norm = float(np.linalg.norm(query))
        if not np.isfinite(norm) or norm == 0:
            raise ClipModuleError(f"{source}: the query embedding is zero or not finite")
        scores, ids = self.index.search(query / norm, k)
        rows = self.index.rows.take([int(i) for i in ids[0] if i >= 0]).to_pylist()
        return [{"rank": rank + 1, "score": float(score), **row}
                for rank, (score, row) in enumerate(zip(scores[0], rows))]

    def shard_files(self) -> dict[str, str]:
        """Shard name -> path, for thumbnails: those the index records, then `shards`."""
        from clipmodule.data.shards import shard_paths

        files = dict(self.index.info.get("shards") or {})
        files.update({Path(path).name: path for path in (shard_paths(self.extra_shards) if self.extra_shards else [])})
        return files

    def thumbnails(self, hits: list[Hit]) -> list[Any]:
        """Each hit's image (PIL) from its shard, or None where the shard is not at hand."""
        from clipmodule.search.sheet import hit_images

        return hit_images(hits, self.shard_files())
