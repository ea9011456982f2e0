"""`clipmodule fit|validate|test|predict -c experiments/base.yaml -c experiments/<run>.yaml`: LightningCLI over
`ClipLitModule` and `ShardDataModule`, tracked in MLflow (embedded sqlite store by default).

Every run gets its own folder `<trainer.default_root_dir>/<experiment id>/<run id>/` holding `config.yaml`
and `checkpoints/`. The callbacks and checkpoint IO every run uses are declared here as config sections
(`checkpoint`, `progress_bar`, `lr_monitor`, `data_health`, `trainer.plugins`), so `--print_config` shows them.
"""

from __future__ import annotations

import logging
import time
import warnings
from argparse import ArgumentError
from typing import Any

from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint, RichProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.plugins.io import TorchCheckpointIO

from clipmodule.api import tokenizer_spec
from clipmodule.data.datamodule import ShardDataModule
from clipmodule.errors import ClipModuleError, one_line
from clipmodule.options import check_config_files, config_files
from clipmodule.tracking.mlflow import DEFAULT_TRACKING_URI, absolute_store
from clipmodule.train.callbacks import AtomicCheckpointIO, DataHealth, RunRecorder, load_checkpoint_safely
from clipmodule.train.embeddings import EmbeddingWriter
from clipmodule.train.module import ClipLitModule


class ClipArgumentParser(LightningArgumentParser):
    """Lightning's parser, except that the `data` options take a string as the value it is: jsonargparse reads a
    string given to a type that also accepts dataclasses (`data.train_shards`, `data.zeroshot_sets`) as the path
    or URL of a sub-config file, so `pairs.csv` became the CSV's text, a `https://` folder its HTML page and a
    remote tar was downloaded whole. A data option's value is YAML inline or in a `-c` file, never a file name."""

    def add_lightning_class_args(self, lightning_class, nested_key: str, subclass_mode: bool = False,
                                 required: bool = True) -> list[str]:
        if nested_key != "data" or subclass_mode:
            return super().add_lightning_class_args(lightning_class, nested_key, subclass_mode, required)
        return self.add_class_arguments(lightning_class, nested_key, fail_untyped=False, instantiate=True,
                                        sub_configs=False)


class ClipCLI(LightningCLI):
    """LightningCLI with our links, always-on callbacks and checkpoint IO.

    Three private LightningCLI methods are overridden because no public hook covers them (Lightning 2.x):
    `_parse_ckpt_path` (Lightning would merge a checkpoint's hyperparameters into the config; ours stays
    authoritative), `_instantiate_trainer` (drop the always-on progress bar when the config disables it, before the
    Trainer refuses the pair) and `_run_subcommand` (SIGTERM and a full disk end in one line, and the MLflow run is
    ended as KILLED). `ClipLitModule._logging_step` reads the Trainer's `_logger_connector` (whether this step's
    metrics reach the logger), which Lightning exposes nowhere else."""

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults({"checkpoint.save_last": True, "checkpoint.every_n_train_steps": 1000,
                             "checkpoint.filename": "step{step:08d}", "checkpoint.auto_insert_metric_name": False})
        parser.add_lightning_class_args(RichProgressBar, "progress_bar")
        parser.add_lightning_class_args(LearningRateMonitor, "lr_monitor")
        parser.set_defaults({"lr_monitor.logging_interval": "step"})
        parser.add_lightning_class_args(DataHealth, "data_health")
        parser.add_lightning_class_args(EmbeddingWriter, "prediction_writer")
        parser.link_arguments("data.zeroshot_classnames", "model.zeroshot_classnames")
        parser.link_arguments("model", "data.image_size", apply_on="instantiate",
                              compute_fn=lambda module: module.model.config.vision.image_size)
        parser.link_arguments("model", "data.tokenizer", apply_on="instantiate",
                              compute_fn=lambda module: tokenizer_spec(module.model))

    def _parse_ckpt_path(self) -> None:
        """LightningCLI would merge the checkpoint's hyperparameters into the config; here the config stays
        authoritative (the hyperparameters are a record), and the checkpoint is only checked to be loadable."""
        subcommand = self.config.get("subcommand")
        path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if path and path not in ("last", "best", "hpc", "registry"):
            load_checkpoint_safely(path, map_location="cpu", mmap=True)

    def before_instantiate_classes(self) -> None:
        """MLflow names unnamed runs from Python's `random`, which `seed_everything` has just seeded: every
        run would get the same name. Name them after model, loss and start time instead. A relative sqlite store
        is named by its absolute path (see `absolute_store`)."""
        config = self.config.get(self.subcommand) if self.subcommand else self.config
        logger = config.trainer.get("logger")
        init_args = getattr(logger, "init_args", None)
        if init_args is None or "MLFlowLogger" not in str(getattr(logger, "class_path", "")):
            return
        if init_args.get("tracking_uri"):
            init_args.tracking_uri = absolute_store(init_args.tracking_uri)
        if init_args.run_name:
            return
        network_config = config.model.model
        network = network_config.init_args.get("name", "model") if network_config and "init_args" in network_config \
            else "model"  # null: the architecture comes from model.init_from
        init_args.run_name = f"{network}-{config.model.loss}-{time.strftime('%Y%m%d-%H%M%S')}"

    def _run_subcommand(self, subcommand: str) -> None:
        """Lightning turns SIGTERM into `SIGTERMException` (a `SystemExit` with code 0) at the next batch, without
        saving; the checkpoints written so far are complete files (atomic writes). Say so, and exit 2."""
        from lightning.pytorch.utilities.exceptions import SIGTERMException

        from clipmodule.tracking.mlflow import end_started_runs
        from clipmodule.train.callbacks import sigterm_stops_the_fit

        try:
            with sigterm_stops_the_fit():
                super()._run_subcommand(subcommand)
        except SIGTERMException:
            end_started_runs(self.trainer.loggers, "KILLED")  # Lightning ended them as FAILED
            raise ClipModuleError(f"stopped by SIGTERM at step {self.trainer.global_step}; the checkpoints written "
                                  "so far are intact") from None

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list) -> Trainer:
        """`trainer.enable_progress_bar: false` drops the progress bar this CLI always adds (Lightning would
        refuse the pair with a traceback)."""
        if config.get("enable_progress_bar") is False:
            callbacks = [callback for callback in callbacks if not isinstance(callback, RichProgressBar)]
        return super()._instantiate_trainer(config, callbacks)

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        trainer = super().instantiate_trainer(**kwargs)
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:
            # `trainer.plugins` was replaced without naming a checkpoint IO: keep atomic writes and safe loading
            trainer.strategy.checkpoint_io = AtomicCheckpointIO()
        return trainer


TRAINER_DEFAULTS = {
    "logger": {"class_path": "lightning.pytorch.loggers.MLFlowLogger",
               # asynchronous: a log call into sqlite costs 0.06-0.2 s of the trainer's thread on a busy CPU;
               # MLflow's own thread writes instead, and ending the run (set_terminated) waits for what it queued
               "init_args": {"experiment_name": "clipmodule", "tracking_uri": DEFAULT_TRACKING_URI,
                             "synchronous": False}},
    "default_root_dir": "runs",
    "plugins": [{"class_path": "clipmodule.train.callbacks.AtomicCheckpointIO"}],
}


class _DropTips(logging.Filter):
    """Lightning's advertisement for its cloud logger, printed at every fit start, says nothing about the run."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip:")


def silence_known_notices() -> None:
    """Notices that are known to be harmless here, silenced at their source by exact message; real warnings stay."""
    # torchdata's StatefulDataLoader calls torch.set_vital, which torch itself deprecated: not our call to change.
    warnings.filterwarnings("ignore", message="'set_vital' is deprecated", category=UserWarning)
    # Lightning's own use of a torch pytree API (lightning/pytorch/utilities/_pytree.py).
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
    # Said whenever a LightningModule has a batch-transfer hook and a datamodule is passed; ours normalises the
    # datamodule's uint8 images on the device, which is the intent.
    warnings.filterwarnings("ignore", message="You have overridden `on_after_batch_transfer` in `LightningModule`")
    # ModelCheckpoint under manual optimisation (model.accum_freq > 1): a 14-line example of saving the weights
    # before the optimiser step; ours are saved after it, as with automatic optimisation, which is the intent.
    warnings.filterwarnings("ignore", message="Using ModelCheckpoint with manual optimization and every_n_train_steps")
    # A fit without validation data: the datamodule's list of validation loaders is empty, which is the intent.
    warnings.filterwarnings("ignore", message=r"Total length of `list` across ranks is zero\.")
    tips = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(existing, _DropTips) for existing in tips.filters):
        tips.addFilter(_DropTips())


def build_cli(args: list[str], run: bool = False) -> ClipCLI:
    """The CLI over `args` (with a subcommand first when `run`); `run=False` parses and instantiates only."""
    silence_known_notices()
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter")  # argv is ours, not sys.argv's
    # Our IterableDataset's length is exact (every worker gets a fixed quota), which Lightning cannot know.
    warnings.filterwarnings("ignore", message="Your `IterableDataset` has `__len__` defined")
    check_config_files(args)
    try:
        return ClipCLI(ClipLitModule, ShardDataModule, args=args, run=run, trainer_defaults=TRAINER_DEFAULTS,
                       save_config_callback=RunRecorder, save_config_kwargs={"save_to_log_dir": False},
                       parser_class=ClipArgumentParser, auto_configure_optimizers=False,
                       parser_kwargs={"exit_on_error": False})
    except ArgumentError as error:
        configs = config_files(args)
        where = f" ({', '.join(configs)})" if configs else ""
        raise ClipModuleError(f"bad configuration{where}: {parser_reason(error)}") from None


def parser_reason(error: ArgumentError, limit: int = 400) -> str:
    """jsonargparse's message on one line: the key *and* the reason on the lines below it; a union type's
    list of every alternative is cut at `limit` characters."""
    text = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def run_cli(subcommand: str, argv: list[str]) -> int:
    try:
        build_cli([subcommand, *argv], run=True)
    except ClipModuleError as error:
        raise ClipModuleError(one_line(str(error))) from None
    return 0


def fit(argv: list[str]) -> int:
    if "--print_param_groups" in argv:  # the optimiser's groups (model.optim.layer_decay), as --print_config
        return print_param_groups([arg for arg in argv if arg != "--print_param_groups"])
    return run_cli("fit", argv)


def print_param_groups(argv: list[str]) -> int:
    """Prints the parameter groups the configured run's optimiser gets (lr, lr scale, weight decay, names), as YAML."""
    import yaml

    from clipmodule.train.layer_decay import describe_groups

    try:
        module = build_cli([*argv, "--trainer.logger", "false"]).model  # nothing to record
    except ClipModuleError as error:
        raise ClipModuleError(one_line(str(error))) from None
    print(yaml.safe_dump(describe_groups(module.model, module.optim), sort_keys=False), end="")
    return 0


def validate(argv: list[str]) -> int:
    return run_cli("validate", argv)


def test(argv: list[str]) -> int:
    return run_cli("test", argv)


def predict(argv: list[str]) -> int:
    return run_cli("predict", argv)
