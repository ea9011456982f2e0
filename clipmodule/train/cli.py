"""`clipmodule fit|validate|test|predict -c experiments/base.yaml -c experiments/<run>.yaml`: LightningCLI over
`ClipLitModule` and `ShardDataModule`, tracked in MLflow (embedded sqlite store by default).

Every run gets its own folder `<trainer.default_root_dir>/<experiment id>/<run id>/` holding `config.yaml`
and `checkpoints/`; checkpoints are written to a temporary file and renamed, and read with
`torch.load(weights_only=True)`.
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from argparse import ArgumentError
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint, RichProgressBar
from lightning.pytorch.cli import LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import MLFlowLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO

from clipmodule.data.datamodule import ShardDataModule
from clipmodule.errors import ClipModuleError
from clipmodule.train.module import ClipLitModule

DEFAULT_TRACKING_URI = "sqlite:///mlruns.db"
DATA_CARD_TAG = "data_card_hash"  # the tag `clipmodule compare` shows (clipmodule.tracking.compare.DATA_CARD_TAG)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written to `<path>.tmp` and renamed (a crash never leaves a half-written file under the
    real name), and loaded without executing pickled code."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.tmp{os.getpid()}")
        try:
            torch.save(checkpoint, temporary)
            os.replace(temporary, path)
        finally:
            temporary.unlink(missing_ok=True)

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        return load_checkpoint_safely(path, map_location=map_location or "cpu")


def load_checkpoint_safely(path: Any, **options: Any) -> dict[str, Any]:
    """`torch.load(weights_only=True)`: tensors and plain containers only, never pickled code."""
    if not Path(path).is_file():
        raise ClipModuleError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, weights_only=True, **options)
    except Exception as error:  # torch raises many types for a damaged or foreign file
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ClipModuleError(f"cannot load checkpoint {path}: {reason[:300]}") from None


class DataHealth(Callback):
    """Logs how many corrupt samples and shard reads the training loader skipped (summed over ranks)."""

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: Any) -> None:
        if trainer.global_step % max(1, trainer.log_every_n_steps) == 0:
            self._log(trainer, pl_module)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._log(trainer, pl_module)

    def _log(self, trainer: Trainer, pl_module: LightningModule) -> None:
        counts = getattr(trainer.datamodule, "corrupt_counts", None)
        if counts is None:
            return
        for name, value in counts().items():
            pl_module.log(f"data/{name}", float(value), reduce_fx="sum", sync_dist=True)


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


class ClipCLI(LightningCLI):
    """LightningCLI with our links, forced callbacks and checkpoint IO."""

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults({"checkpoint.save_last": True, "checkpoint.every_n_train_steps": 1000,
                             "checkpoint.filename": "step{step:08d}", "checkpoint.auto_insert_metric_name": False})
        parser.link_arguments("data.zeroshot_classnames", "model.zeroshot_classnames")
        parser.link_arguments("model", "data.image_size", apply_on="instantiate",
                              compute_fn=lambda module: module.model.config.vision.image_size)
        parser.link_arguments("model", "data.context_length", apply_on="instantiate",
                              compute_fn=lambda module: module.model.config.text.context_length)

    def _parse_ckpt_path(self) -> None:
        """LightningCLI would merge the checkpoint's hyperparameters into the config; here the config stays
        authoritative (the hyperparameters are a record), and the checkpoint is only checked to be loadable."""
        subcommand = self.config.get("subcommand")
        path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if path and path not in ("last", "best", "hpc", "registry"):
            load_checkpoint_safely(path, map_location="cpu", mmap=True)

    def before_instantiate_classes(self) -> None:
        """MLflow names unnamed runs from Python's `random`, which `seed_everything` has just seeded: every
        run would get the same name. Name them after model, loss and start time instead."""
        config = self.config.get(self.subcommand) if self.subcommand else self.config
        logger = config.trainer.get("logger")
        init_args = getattr(logger, "init_args", None)
        if init_args is None or "MLFlowLogger" not in str(getattr(logger, "class_path", "")) or init_args.run_name:
            return
        network = config.model.model.init_args.get("name", "model") if "init_args" in config.model.model else "model"
        init_args.run_name = f"{network}-{config.model.loss}-{time.strftime('%Y%m%d-%H%M%S')}"

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        trainer = super().instantiate_trainer(**kwargs)
        present = {type(callback) for callback in trainer.callbacks}
        for extra in (RichProgressBar(), LearningRateMonitor(logging_interval="step"), DataHealth()):
            if not any(issubclass(kind, type(extra)) for kind in present):
                trainer.callbacks.append(extra)
        trainer.strategy.checkpoint_io = AtomicCheckpointIO()
        return trainer


TRAINER_DEFAULTS = {
    "logger": {"class_path": "lightning.pytorch.loggers.MLFlowLogger",
               "init_args": {"experiment_name": "clipmodule", "tracking_uri": DEFAULT_TRACKING_URI}},
    "default_root_dir": "runs",
}


def build_cli(args: list[str], run: bool = False) -> ClipCLI:
    """The CLI over `args` (with a subcommand first when `run`); `run=False` parses and instantiates only."""
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter")  # argv is ours, not sys.argv's
    # Our IterableDataset's length is exact (every worker gets a fixed quota), which Lightning cannot know.
    warnings.filterwarnings("ignore", message="Your `IterableDataset` has `__len__` defined")
    check_config_files(args)
    try:
        return ClipCLI(ClipLitModule, ShardDataModule, args=args, run=run, trainer_defaults=TRAINER_DEFAULTS,
                       save_config_callback=RunRecorder, save_config_kwargs={"save_to_log_dir": False},
                       auto_configure_optimizers=False, parser_kwargs={"exit_on_error": False})
    except ArgumentError as error:
        configs = [args[i + 1] for i, arg in enumerate(args[:-1]) if arg in ("-c", "--config")]
        where = f" ({', '.join(configs)})" if configs else ""
        raise ClipModuleError(f"bad configuration{where}: {one_line(str(error))}") from None


def check_config_files(args: list[str]) -> None:
    """Each `-c` file exists and is YAML: a one-line error naming the file, not a parser dump."""
    import yaml

    for flag, value in zip(args, args[1:]):
        if flag not in ("-c", "--config"):
            continue
        try:
            yaml.safe_load(Path(value).read_text())
        except OSError as error:
            raise ClipModuleError(f"config {value}: {error.strerror}") from None
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            raise ClipModuleError(f"config {value}: malformed YAML{at}: {getattr(error, 'problem', error)}") from None


def run_cli(subcommand: str, argv: list[str]) -> int:
    try:
        build_cli([subcommand, *argv], run=True)
    except ClipModuleError as error:
        raise ClipModuleError(one_line(str(error))) from None
    return 0


def one_line(message: str) -> str:
    """The user's message out of a DataLoader worker's wrapped traceback, else the message itself."""
    if "Original Traceback" in message:
        last = message.strip().splitlines()[-1]
        return last.split(": ", 1)[1] if ": " in last else last
    return message.strip().splitlines()[0] if message.strip() else message


def fit(argv: list[str]) -> int:
    return run_cli("fit", argv)


def validate(argv: list[str]) -> int:
    return run_cli("validate", argv)


def test(argv: list[str]) -> int:
    return run_cli("test", argv)


def predict(argv: list[str]) -> int:
    return run_cli("predict", argv)
