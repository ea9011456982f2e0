"""What every `clipmodule fit` run uses besides the model and data: safe checkpoint IO, data-health logging,
the run folder with its config and MLflow params/tags. `clipmodule fit --print_config` shows them."""

from __future__ import annotations

import contextlib
import glob
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.loggers import MLFlowLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO

from clipformats.files import TEMP_MARK, atomic_path, remove_stale_temporaries
from clipmodule.checkpoints.safe_torch import load_torch_file
from clipmodule.errors import ClipModuleError, one_line
from clipmodule.tracking.mlflow import DATA_CARD_TAG


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written to a hidden `.<name>.tmp-<pid>` and renamed (a crash never leaves a half-written file
    under the real name), and loaded without executing pickled code. A write that fails (a full disk) removes
    its temporary and ends the fit in one line naming the file; the checkpoints already written are untouched.
    Each save first removes the temporaries that killed fits left in the folder (their pid is no live process)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        path = Path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            remove_stale_checkpoint_temporaries(path.parent, path.suffix)
            with atomic_path(path) as temporary, open(temporary, "wb") as handle:
                # through a Python file a full disk raises OSError(ENOSPC), which torch's own writer never shows
                torch.save(checkpoint, handle)
        except (OSError, RuntimeError) as error:
            cause = os_error_in(error)  # torch's zip writer raises "unexpected pos" over the OSError as it closes
            if cause is None:
                raise
            raise ClipModuleError(f"cannot write checkpoint {path}: {cause.strerror or one_line(cause)}; the "
                                  "checkpoints written before it are intact") from None

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        return load_checkpoint_safely(path, map_location=map_location or "cpu")


@contextlib.contextmanager
def sigterm_stops_the_fit() -> Iterator[None]:
    """Within the block, SIGTERM raises Lightning's `SIGTERMException` at once wherever Lightning's own handler
    is not installed: before its loop starts (data setup, a checkpoint being restored, loaders starting) and
    after it ends. There the default action would kill the process on the spot and leave its MLflow run RUNNING
    for ever. While Lightning's handler is installed it calls this one too, which then leaves it to Lightning
    (stop at the next batch)."""
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield
        return
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    def stop(signum: int, frame: Any) -> None:
        if signal.getsignal(signal.SIGTERM) is stop:
            raise SIGTERMException

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def os_error_in(error: BaseException | None) -> OSError | None:
    """The OSError that `error` is, or was raised while handling (its `__context__` chain), if any."""
    while error is not None and not isinstance(error, OSError):
        error = error.__cause__ or error.__context__
    return error


def remove_stale_checkpoint_temporaries(folder: Path, suffix: str) -> list[Path]:
    """The hidden temporaries of `*<suffix>` files in `folder` whose writer was killed (`remove_stale_temporaries`)."""
    stale = []
    for temporary in folder.glob(f".*{glob.escape(suffix)}{TEMP_MARK}*"):
        target = temporary.name[1:].rsplit(TEMP_MARK, 1)[0]
        stale += remove_stale_temporaries(folder / target)
    return stale


def load_checkpoint_safely(path: Any, **options: Any) -> dict[str, Any]:
    """`torch.load(weights_only=True)`: tensors and plain containers only, never pickled code; a file that is not
    a checkpoint (empty, a plain pickle, code) is one line saying what it is (`checkpoints.safe_torch`)."""
    if not Path(path).is_file():
        raise ClipModuleError(f"checkpoint {path} does not exist")
    return load_torch_file(path, "cannot load checkpoint", **options)


class DataHealth(Callback):
    """Logs how many corrupt samples and shard reads the training loader skipped since the run began: summed
    over ranks and epochs, and carried by the checkpoint, so a resumed run goes on counting (the loader's
    own counters start again every epoch).

    Args:
        every_n_steps: how often; None: the trainer's `log_every_n_steps`.
    """

    NAMES = ("corrupt_samples", "corrupt_shards")

    def __init__(self, every_n_steps: int | None = None):
        self.every_n_steps = every_n_steps
        self.finished = dict.fromkeys(self.NAMES, 0)  # all ranks' counts of the epochs that have ended
        self.finished_epoch = -1

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: Any) -> None:
        if trainer.global_step % max(1, self.every_n_steps or trainer.log_every_n_steps) == 0:
            self._log(pl_module, self._totals(trainer, pl_module, end_of_epoch=False))

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._log(pl_module, self._totals(trainer, pl_module, end_of_epoch=True))

    def _totals(self, trainer: Trainer, pl_module: LightningModule, end_of_epoch: bool) -> dict[str, int] | None:
        counts = getattr(trainer.datamodule, "corrupt_counts", None)
        if counts is None:
            return None
        epoch = counts()  # this rank, this epoch
        local = torch.tensor([float(epoch.get(name, 0)) for name in self.NAMES], dtype=torch.float64,
                             device=pl_module.device)
        summed = trainer.strategy.reduce(local, reduce_op="sum")  # every rank gets the same totals
        current = {name: int(value) for name, value in zip(self.NAMES, summed.tolist())}
        if not end_of_epoch or trainer.current_epoch <= self.finished_epoch:
            return {name: self.finished[name] + current[name] for name in self.NAMES}
        self.finished = {name: self.finished[name] + current[name] for name in self.NAMES}
        self.finished_epoch = trainer.current_epoch
        return dict(self.finished)

    def _log(self, pl_module: LightningModule, totals: dict[str, int] | None) -> None:
        for name, value in (totals or {}).items():
            pl_module.log(f"data/{name}", float(value), sync_dist=False)

    def state_dict(self) -> dict[str, Any]:
        return {"finished": dict(self.finished), "finished_epoch": self.finished_epoch}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.finished = {name: int(state_dict["finished"].get(name, 0)) for name in self.NAMES}
        self.finished_epoch = int(state_dict["finished_epoch"])


class RunRecorder(SaveConfigCallback):
    """Saves the resolved config in the run folder and records params and tags in MLflow (rank 0)."""

    def save_config(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        folder = run_folder(trainer)
        folder.mkdir(parents=True, exist_ok=True)
        self.parser.save(self.config, str(folder / "config.yaml"), skip_none=False, overwrite=True)
        for logger in trainer.loggers:
            if isinstance(logger, MLFlowLogger):
                logger.log_hyperparams(trainer_params(trainer))
                for key, value in run_tags(trainer, folder, stage).items():
                    logger.experiment.set_tag(logger.run_id, key, value)


def run_folder(trainer: Trainer) -> Path:
    logger = trainer.logger
    if logger is None:
        return Path(trainer.default_root_dir)
    version = logger.version if isinstance(logger.version, str) else f"version_{logger.version}"
    return Path(trainer.default_root_dir) / str(logger.name) / version


def trainer_params(trainer: Trainer) -> dict[str, Any]:
    datamodule = trainer.datamodule
    per_device = getattr(datamodule, "batch_size", None)
    return {
        "trainer/precision": str(trainer.precision), "trainer/world_size": trainer.world_size,
        "trainer/max_steps": trainer.max_steps, "trainer/max_epochs": trainer.max_epochs,
        "trainer/accumulate_grad_batches": trainer.accumulate_grad_batches,
        "global_batch_size": (per_device or 0) * trainer.world_size * trainer.accumulate_grad_batches,
    }


def run_tags(trainer: Trainer, folder: Path, stage: str) -> dict[str, str]:
    tags = {"run_folder": str(folder), "command": " ".join(["clipmodule", *sys.argv[1:]])[:4000]}
    datamodule = trainer.datamodule
    if stage == "fit" and hasattr(datamodule, "data_card_hash"):
        card = datamodule.data_card_hash()
        tags[DATA_CARD_TAG] = card or datamodule.shards_content_hash() or "unknown"
    return tags
