"""What one `clipmodule serve` holds for its whole life: each index with its engine (model loaded once), its row
ids and its shards' images; each curation work folder's browse table (read at its first request); the cards
folder. Built once by `Service.open`, handed to the routes; nothing global."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from clipmodule.errors import ClipModuleError
from clipmodule.serve.images import ShardImages
from clipmodule.serve.limits import Limits, RequestError


@dataclass
class ServeConfig:
    """Everything `clipmodule serve` serves."""

    indexes: dict[str, Path]
    """Index name -> `curation index` folder (the first is clip-retrieval's default)."""
    shards: list[str] = field(default_factory=list)
    """Shard files or folders for thumbnails, beside those the indexes record."""
    works: dict[str, Path] = field(default_factory=dict)
    """Dataset name -> `curation build` work folder, for the browse view."""
    cards: Path | None = None
    """Folder of data cards (`<name>.md` and their plots)."""
    model: str | None = None
    """Query model (default: each index's recorded one)."""
    device: str = "cpu"
    mlflow_ui: str | None = None
    """Address of an MLflow UI, linked from the page."""
    limits: Limits = field(default_factory=Limits)


class ServedIndex:
    """One index: its engine, (shard, key) -> row id, its shards' images; queries take turns on the model."""

    def __init__(self, name: str, folder: Path, config: ServeConfig) -> None:
        from clipmodule.search.engine import SearchEngine

        self.name = name
        self.engine = SearchEngine(folder, model=config.model, device=config.device, shards=config.shards)
        rows = self.engine.index.rows
        self.row_ids = {pair: number for number, pair in
                        enumerate(zip(rows.column("shard").to_pylist(), rows.column("key").to_pylist()))}
        self.images = ShardImages(self.engine.shard_files())
        self.lock = threading.Lock()

    def search(self, kind: str, query: Any, k: int) -> list[dict[str, Any]]:
        """The engine's hits for a query of `kind` text | image | embedding (one query at a time)."""
        with self.lock:
            if kind == "text":
                return self.engine.by_text(query, k)
            if kind == "image":
                return self.engine.by_image(query, k)
            return self.engine.by_embedding(query, k)

    def row(self, row_id: int) -> dict[str, Any]:
        return self.engine.index.rows.slice(row_id, 1).to_pylist()[0]

    def neighbours(self, row_id: int, k: int) -> list[dict[str, Any]]:
        """The k samples nearest to sample `row_id`: its stored vector where the index keeps it, else its image
        embedded by the model (image -> image either way)."""
        try:
            with self.lock:
                vector = np.asarray(self.engine.index.index.reconstruct(row_id), dtype=np.float32)
        except RuntimeError:
            row = self.row(row_id)
            image = self.images.image(row["shard"], row["key"])
            if image is None:
                raise ClipModuleError(f"sample {row['shard']}:{row['key']}: neither its vector nor its image is "
                                      "at hand") from None
            return self.search("image", image, k)
        return self.search("embedding", vector, k)


class Service:
    """The indexes (opened now), the datasets (read when first browsed) and the cards of one service."""

    def __init__(self, config: ServeConfig, indexes: dict[str, ServedIndex]) -> None:
        self.config = config
        self.limits = config.limits
        self.indexes = indexes
        self._datasets: dict[str, Any] = {}
        self._lock = threading.Lock()

    @classmethod
    def open(cls, config: ServeConfig) -> Service:
        for name, folder in config.works.items():
            if not Path(folder).is_dir():
                raise ClipModuleError(f"--work {name}={folder}: folder not found")
        if config.cards is not None and not Path(config.cards).is_dir():
            raise ClipModuleError(f"--cards {config.cards}: folder not found")
        return cls(config, {name: ServedIndex(name, Path(folder), config) for name, folder in config.indexes.items()})

    def index(self, name: str | None) -> ServedIndex:
        if not self.indexes:
            raise RequestError(404, "this service was given no index")
        if name is None or name == "":
            return next(iter(self.indexes.values()))
        if name not in self.indexes:
            raise RequestError(404, f"unknown index {name!r} (known: {', '.join(self.indexes)})")
        return self.indexes[name]

    def dataset(self, name: str) -> Any:
        """The browse table of work folder `name`, read once."""
        from clipmodule.serve.browse import read_dataset

        if name not in self.config.works:
            raise RequestError(404, f"unknown dataset {name!r} (known: {', '.join(self.config.works) or 'none'})")
        with self._lock:
            if name not in self._datasets:
                self._datasets[name] = read_dataset(Path(self.config.works[name]))
            return self._datasets[name]

    def close(self) -> None:
        for served in self.indexes.values():
            served.images.close()
        for dataset in self._datasets.values():
            dataset.images.close()
