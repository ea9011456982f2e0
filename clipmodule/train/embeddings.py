"""`clipmodule predict` writes what it computes: image and text embeddings of the prediction shards in the
embedding contract's layout (`clipformats.embeddings`, clip-retrieval's), one part per rank and chunk:

    <out>/img_emb/img_emb_<rank>_<chunk>.npy     float16 [n, embed_dim], L2-normalised
    <out>/text_emb/text_emb_<rank>_<chunk>.npy   the same rows' caption embeddings
    <out>/metadata/metadata_<rank>_<chunk>.parquet   key, shard: one row per embedding row

Row i of the three files of a part is the same sample. The parts are per rank and chunk, not per shard as
`curation embed` writes them: the prediction loader deals every shard's samples round-robin over ranks and
workers, so no rank sees a whole shard. `curation index`, `filter` and `dedup` read either.

One run owns the folder. Rank 0 takes `<out>.lock` (the lock curation's stages take beside their outputs) for
the whole run and refuses a folder that holds anything: parts of an earlier run left beside this run's would be
read as one set. `overwrite: true` first removes what an earlier run wrote (img_emb/, text_emb/, metadata/,
embeddings.json and hidden temporaries) and refuses a folder holding anything else, which is not an embedding
folder. Every part carries the run's id; when every rank has written its parts, rank 0 marks the folder one
finished set of this run's parts (`finish_set`: the contract's `embeddings.json`, with the checkpoint and the
hash of its weights); a folder without it is unfinished, and readers refuse it."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter

from clipformats.embeddings import FOLDERS, METADATA, begin_set, finish_set, model_hash, normalise, write_part
from clipformats.files import TEMP_MARK
from clipformats.locks import OutputLock, OutputLocked
from clipmodule.errors import ClipModuleError

WRITER = "clipmodule predict"


class EmbeddingWriter(BasePredictionWriter):
    """Writes `predict_step`'s embeddings and sample keys (nothing happens in fit/validate/test).

    Args:
        output_dir: folder for img_emb/, text_emb/, metadata/; None: `<trainer.default_root_dir>/embeddings`.
        batches_per_file: how many batches go into one chunk of files.
        dtype: float16 (clip-retrieval's default) or float32.
        overwrite: replace the embeddings an earlier run wrote into `output_dir` (else a folder that is not
            empty is refused).
    """

    def __init__(self, output_dir: str | None = None, batches_per_file: int = 100, dtype: str = "float16",
                 overwrite: bool = False):
        super().__init__(write_interval="batch")
        self.output_dir, self.batches_per_file, self.dtype = output_dir, max(1, batches_per_file), np.dtype(dtype)
        self.overwrite = overwrite
        self._pending: list[dict[str, Any]] = []
        self._chunk, self._run = 0, uuid.uuid4().hex
        self._lock: OutputLock | None = None

    def folder(self, trainer: Trainer) -> Path:
        return Path(self.output_dir) if self.output_dir else Path(trainer.default_root_dir) / "embeddings"

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Before any rank writes: rank 0 locks and checks (or clears) the folder, and every rank learns the
        outcome (a refusal stops them all, none waits for the others)."""
        if stage != "predict":
            return
        self._pending, self._chunk = [], 0
        refusal = self._claim(self.folder(trainer)) if trainer.global_rank == 0 else None
        refusal = trainer.strategy.broadcast(refusal, src=0)
        if refusal:
            self._release()
            raise ClipModuleError(refusal)
        # one id for every rank's parts: the finished set is this run's parts, never an earlier run's
        self._run = trainer.strategy.broadcast(uuid.uuid4().hex, src=0)

    def _claim(self, folder: Path) -> str | None:
        """Rank 0: lock `folder` and leave it empty, or say why not (one line)."""
        where = folder.resolve()  # "." or "out/" has a name to put the lock beside
        lock = OutputLock(where.parent / f"{where.name}.lock", WRITER)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            lock.acquire()
        except OutputLocked as error:
            return f"{folder}: {error}"
        except OSError as error:
            return f"{folder}: cannot create or lock the output folder ({error.strerror or error})"
        self._lock = lock
        entries = sorted(path.name for path in folder.iterdir())
        if not entries:
            return None
        if not self.overwrite:
            return (f"{folder}: output folder is not empty (it holds {', '.join(entries[:3])}); choose a new or empty "
                    f"folder, or pass --prediction_writer.overwrite true to replace the embeddings written there")
        foreign = [name for name in entries if name not in FOLDERS and TEMP_MARK not in name]
        if foreign:
            return (f"{folder}: holds {foreign[0]}, which no embedding writer made; overwrite removes only "
                    f"{', '.join(FOLDERS)}: choose another folder")
        begin_set(folder)  # the finished marker first: a folder being cleared is unfinished
        for name in entries:
            path = folder / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.exists() or path.is_symlink():
                path.unlink()
        return None

    def _release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def write_on_batch_end(self, trainer: Trainer, pl_module: LightningModule, prediction: Any, batch_indices: Any,
                           batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._pending.append(prediction)
        if len(self._pending) >= self.batches_per_file:
            self._flush(trainer)

    def on_predict_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._flush(trainer)

    def on_predict_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Every rank's parts are written (the barrier): rank 0 marks the folder finished and unlocks it."""
        trainer.strategy.barrier("embeddings written")
        if trainer.global_rank == 0:
            checkpoint = str(trainer.ckpt_path) if trainer.ckpt_path else None
            model = {"writer": WRITER, "world_size": trainer.world_size, "path": checkpoint,
                     "weights_sha256": model_hash(checkpoint) if checkpoint else None}
            (self.folder(trainer) / METADATA).mkdir(parents=True, exist_ok=True)  # no sample at all: an empty set
            finish_set(self.folder(trainer), model=model, run=self._run)
        self._release()

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        self._release()

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self._release()

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
