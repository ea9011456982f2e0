"""`clipmodule predict` writes what it computes: image and text embeddings of the prediction shards in
clip-retrieval's layout, one set of files per rank and chunk of batches:

    <out>/img_emb/img_emb_<rank>_<chunk>.npy     float16 [n, embed_dim], L2-normalised
    <out>/text_emb/text_emb_<rank>_<chunk>.npy   the same rows' caption embeddings
    <out>/metadata/metadata_<rank>_<chunk>.parquet   key (shard/sample), one row per embedding row

Row i of the three files of a chunk is the same sample. Every file is written aside and renamed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter

from curation.formats.files import atomic_path


class EmbeddingWriter(BasePredictionWriter):
    """Writes `predict_step`'s embeddings and sample keys (nothing happens in fit/validate/test).

    Args:
        output_dir: folder for img_emb/, text_emb/, metadata/; None: `<trainer.default_root_dir>/embeddings`.
        batches_per_file: how many batches go into one chunk of files.
        dtype: float16 (clip-retrieval's default) or float32.
    """

    def __init__(self, output_dir: str | None = None, batches_per_file: int = 100, dtype: str = "float16"):
        super().__init__(write_interval="batch")
        self.output_dir, self.batches_per_file, self.dtype = output_dir, max(1, batches_per_file), np.dtype(dtype)
        self._pending: list[dict[str, Any]] = []
        self._chunk = 0

    def folder(self, trainer: Trainer) -> Path:
        return Path(self.output_dir) if self.output_dir else Path(trainer.default_root_dir) / "embeddings"

    def write_on_batch_end(self, trainer: Trainer, pl_module: LightningModule, prediction: Any, batch_indices: Any,
                           batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._pending.append(prediction)
        if len(self._pending) >= self.batches_per_file:
            self._flush(trainer)

    def on_predict_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._flush(trainer)

    def _flush(self, trainer: Trainer) -> None:
        if not self._pending:
            return
        import pyarrow as pa
        import pyarrow.parquet as pq

        name = f"{trainer.global_rank:04d}_{self._chunk:05d}"
        arrays = {kind: np.concatenate([p[f"{kind}_features"].float().cpu().numpy() for p in self._pending])
                  for kind in ("image", "text")}
        keys = [key for p in self._pending for key in (p["key"] or [None] * len(p["image_features"]))]
        out = self.folder(trainer)
        for kind, folder, stem in (("image", "img_emb", "img_emb"), ("text", "text_emb", "text_emb")):
            (out / folder).mkdir(parents=True, exist_ok=True)
            with atomic_path(out / folder / f"{stem}_{name}.npy") as tmp, open(tmp, "wb") as handle:
                np.save(handle, arrays[kind].astype(self.dtype))
        (out / "metadata").mkdir(parents=True, exist_ok=True)
        with atomic_path(out / "metadata" / f"metadata_{name}.parquet") as tmp:
            pq.write_table(pa.table({"key": pa.array(keys, pa.string())}), tmp)
        self._pending, self._chunk = [], self._chunk + 1
