"""`clipmodule predict` writes what it computes: image and text embeddings of the prediction shards in the
embedding contract's layout (`clipformats.embeddings`, clip-retrieval's), one part per rank and chunk:

    <out>/img_emb/img_emb_<rank>_<chunk>.npy     float16 [n, embed_dim], L2-normalised
    <out>/text_emb/text_emb_<rank>_<chunk>.npy   the same rows' caption embeddings
    <out>/metadata/metadata_<rank>_<chunk>.parquet   key, shard: one row per embedding row

Row i of the three files of a part is the same sample. The parts are per rank and chunk, not per shard as
`curation embed` writes them: the prediction loader deals every shard's samples round-robin over ranks and
workers, so no rank sees a whole shard. `curation index`, `filter` and `dedup` read either."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import numpy as np
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter

from clipformats.embeddings import begin_set, finish_set, normalise, write_part


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
        self._chunk, self._run = 0, uuid.uuid4().hex

    def folder(self, trainer: Trainer) -> Path:
        return Path(self.output_dir) if self.output_dir else Path(trainer.default_root_dir) / "embeddings"

    def write_on_batch_end(self, trainer: Trainer, pl_module: LightningModule, prediction: Any, batch_indices: Any,
                           batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._pending.append(prediction)
        if len(self._pending) >= self.batches_per_file:
            self._flush(trainer)

    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # one id for every rank's parts: the finished set is this run's parts, never an earlier run's
        self._run = trainer.strategy.broadcast(uuid.uuid4().hex)
        if trainer.global_rank == 0:
            begin_set(self.folder(trainer))

    def on_predict_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._flush(trainer)
        strategy = getattr(trainer, "strategy", None)
        if strategy is not None:
            strategy.barrier()
        if trainer.global_rank == 0:
            finish_set(self.folder(trainer), run=self._run)

    def _flush(self, trainer: Trainer) -> None:
        if not self._pending:
            return
        name = f"{trainer.global_rank:04d}_{self._chunk:05d}"
        arrays = {kind: normalise(np.concatenate([p[f"{kind}_features"].float().cpu().numpy() for p in self._pending]))
                  for kind in ("image", "text")}
        names = [key for p in self._pending for key in (p["key"] or [None] * len(p["image_features"]))]
        # the loader's keys are "<shard file>/<sample key>" (a sample key may itself hold "/": the first one splits)
        split = [full.split("/", 1) if full and "/" in full else (None, full) for full in names]
        write_part(self.folder(trainer), name, arrays["image"], arrays["text"],
                   {"key": [key for _, key in split], "shard": [shard for shard, _ in split]}, str(self.dtype),
                   info={"run": self._run})
        self._pending, self._chunk = [], self._chunk + 1
