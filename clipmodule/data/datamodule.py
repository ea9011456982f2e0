"""Data for training: img2dataset's webdataset shards (jpg/png/webp + txt + json) through torchdata's
`StatefulDataLoader`, so that a checkpoint taken mid-epoch resumes at exactly the next sample.

Decoding, augmentation and tokenisation run in the loader's workers. Training batches carry uint8 pixels:
`ClipLitModule` normalises them on the device (outside Lightning, call `clipmodule.transforms.normalize_batch`
on them). Shards are split by rank and worker;
every rank yields the same number of batches per epoch (DDP needs that), `samples_per_epoch` in all.
Corrupt shards and samples are skipped and counted (`ShardDataModule.corrupt_counts`). The training data may
also be a CSV/TSV or a folder of image + .txt pairs (`clipmodule.data.tables`) or a weighted mixture of sources
(`clipmodule.data.sources`, `clipmodule.data.mixing`); named zero-shot sets are `clipmodule.data.val_sets`'s.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import IterableDataset, get_worker_info
from torchdata.stateful_dataloader import StatefulDataLoader

from clipformats.webdataset import content_hash, image_field, shard_records
from clipmodule.api import TokenizerSpec
from clipmodule.data.batches import TokenizingCollate, plain_data, sum_counters
from clipmodule.data.decode import decode_sample, sample_seed
from clipmodule.data.evaluation import FolderEvalDataset, ShardEvalDataset
from clipmodule.data.mixing import MixedStream, drawn_per_source
from clipmodule.data.online_curation import EpochSelection, OnlineCuration, shard_folders
from clipmodule.data.provenance import check_resume, training_record
from clipmodule.data.remote import is_remote
from clipmodule.data.shards import StreamPlan, shard_paths
from clipmodule.data.sources import TrainSource, TrainSourceConfig, mixture_shares, open_sources
from clipmodule.data.val_sets import OpenedSet, ZeroShotSet, open_set
from clipmodule.errors import ClipModuleError
from clipmodule.transforms import image_transform

log = logging.getLogger(__name__)
SETS_READ_WHOLE = "sets-read-whole"  # the tag of the one batch validating sets that are all read whole

# A shard set of bad samples would otherwise print one warning per sample, millions of lines: name the first
# few skipped samples, then give a running count every `WARN_EVERY`.
WARN_FIRST, WARN_EVERY = 5, 1000


def _worker() -> tuple[int, int]:
    info = get_worker_info()
    return (0, 1) if info is None else (info.id, info.num_workers)


class TrainSamples:
    """One worker's training samples for one epoch: a `ShardStream` cut at this worker's quota.

    Stateful (`state_dict`/`load_state_dict`), so `StatefulDataLoader` checkpoints its position."""

    def __init__(self, dataset: ShardTrainDataset, worker: int, workers: int):
        d = dataset
        self.stream = d.open_stream(d.rank * workers + worker, d.world_size * workers)
        batches = d.batches_per_rank // workers + (worker < d.batches_per_rank % workers)
        self.quota = batches * d.batch_size
        self.transform, self.seed, self.epoch = d.transform, d.seed, d.epoch
        self.max_unusable, self.selection = d.max_unusable, d.selection
        self.emitted = self.corrupt_samples = self.unusable_run = 0
        self.good_pass = 0  # the stream's pass when the last usable sample came out

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self

    def __next__(self) -> dict[str, Any]:
        while self.emitted < self.quota:
            shard, sample = self.stream.next_reference()
            try:
                key, fields = self.stream.read((shard, sample))
            except OSError as error:  # a shard read failed, or a table row's image file is missing
                self._skip(self.stream.describe((shard, sample)), getattr(error, "strerror", None) or str(error))
                continue
            if self.selection is not None and not self.selection.keep(key, fields, self.epoch):
                self.stream.note_unselected()  # left out, not unusable: a mixture's per-source guard skips it
                if self.stream.pass_index >= self.good_pass + 2:  # not a usable sample drawn in a whole pass
                    raise ClipModuleError(f"online curation drew nothing usable in a pass over {self.stream.summary()}")
                continue  # not in this epoch's balanced subset (`clipmodule.data.online_curation`)
            seed = sample_seed(self.seed, self.epoch, shard, sample)
            # an empty or missing caption is checked first: it makes the sample unusable without decoding
            if not fields.get("txt", b"").strip():
                self._skip(key, "empty or missing caption")
                continue
            decoded = decode_sample(fields, self.transform, seed)
            if decoded is None or not decoded["text"]:
                self._skip(key, "undecodable image or bad label" if image_field(fields) else "no image")
                continue
            self.emitted += 1
            self.unusable_run, self.good_pass = 0, self.stream.pass_index
            self.stream.note_usable()
            return {**decoded, "key": key}
        raise StopIteration

    def _skip(self, key: str, reason: str) -> None:
        """Counts an unusable sample; stops when nothing usable can come: a whole pass over this worker's
        shards (the stream drains a pass before starting the next) or `max_unusable` samples in a row."""
        self.corrupt_samples += 1
        self.unusable_run += 1
        if self.corrupt_samples <= WARN_FIRST:
            log.warning("skipping corrupt or incomplete sample %s (%s)", key, reason)
        elif self.corrupt_samples % WARN_EVERY == 0:
            log.warning("skipped %d corrupt or incomplete samples so far (latest %s)", self.corrupt_samples, key)
        whole_pass = self.stream.pass_index >= self.good_pass + 2
        if whole_pass or self.unusable_run >= self.max_unusable:
            span = "a whole pass over" if whole_pass else f"{self.unusable_run} samples in a row from"
            raise ClipModuleError(f"no usable training sample in {span} {self.stream.summary()}: every image "
                                  "missing or undecodable, or caption empty or missing")

    def state_dict(self) -> dict[str, Any]:
        return {"stream": self.stream.state_dict(), "emitted": self.emitted, "corrupt_samples": self.corrupt_samples,
                "unusable_run": self.unusable_run, "good_pass": self.good_pass}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.stream.load_state_dict(state["stream"])
        self.emitted, self.corrupt_samples = state["emitted"], state["corrupt_samples"]
        self.unusable_run = state.get("unusable_run", 0)  # absent from checkpoints of earlier versions
        self.good_pass = state.get("good_pass", self.stream.pass_index)


class ShardTrainDataset(IterableDataset):
    """Shuffled training samples; `len` is this rank's share, a whole number of batches. `sources` (default: the
    shards of `paths`) are the training sources, several drawn by their `shares` (`clipmodule.data.mixing`)."""

    # keyword-only settings, passed through from the DataModule's (which are the `data.*` YAML keys)
    def __init__(self, paths: list[str], transform: Callable, *, batch_size: int, batches_per_rank: int,  # noqa: PLR0913
                 rank: int = 0, world_size: int = 1, shuffle_buffer: int = 1000, seed: int = 0,
                 resample: bool = False, max_unusable: int = 10_000, sources: list[TrainSource] | None = None,
                 shares: list[float] | None = None, selection: EpochSelection | None = None):
        self.sources = sources or [TrainSource("source0", list(paths))]
        self.shares = shares or [1.0 / len(self.sources)] * len(self.sources)
        self.paths, self.transform, self.batch_size = paths, transform, batch_size
        self.batches_per_rank, self.rank, self.world_size = batches_per_rank, rank, world_size
        self.shuffle_buffer, self.seed, self.resample = shuffle_buffer, seed, resample
        self.max_unusable, self.selection = max_unusable, selection
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def open_stream(self, worker: int, workers: int):
        """The sample stream of global worker `worker` of `workers`: one source's, or a mixture's."""
        streams = [source.stream(StreamPlan(len(source), self.seed, self.epoch, worker, workers, self.resample,
                                            stream=number), self.shuffle_buffer)
                   for number, source in enumerate(self.sources)]
        if len(streams) == 1:
            return streams[0]
        names = [source.name for source in self.sources]
        return MixedStream(streams, self.shares, names, self.seed, self.epoch, worker, self.max_unusable)

    def __len__(self) -> int:
        return self.batches_per_rank * self.batch_size

    def __iter__(self) -> TrainSamples:
        return TrainSamples(self, *_worker())


class EpochLoader(StatefulDataLoader):
    """A `StatefulDataLoader` that numbers its passes and tells the dataset (for its shard order and
    augmentation seeds); the number is part of the state, so a resumed pass keeps its epoch."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.epoch = -1
        self._resumed_epoch: int | None = None

    def _get_iterator(self):
        if self.next_iter_state is None:
            self.epoch += 1
        else:
            self.epoch = self._resumed_epoch
        self.dataset.set_epoch(self.epoch)
        return super()._get_iterator()

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        return {"epoch": self.epoch, "loader": state}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._resumed_epoch = state_dict["epoch"]
        super().load_state_dict(state_dict["loader"])


class ShardDataModule(L.LightningDataModule):
    """Training shards plus optional held-out shards for retrieval and labelled shards for zero-shot.

    Args:
        train_shards: img2dataset output: a directory, brace pattern (`shards/{00000..00099}.tar`),
            glob, or list of those; or a CSV/TSV of image paths and captions, or a folder of images with
            same-stem .txt captions; or several sources, `a::b` (open_clip's form) or a list of
            {shards, weight, name} (`clipmodule.data.sources`), each sample's source drawn by weight.
        upsampling_factors: with `a::b` sources: open_clip's `--train-data-upsampling-factors` (`1::2`): a
            source's share of samples is its factor times its size; default all 1 (every sample equally likely).
        csv_image_key: a CSV's image-path column (open_clip's `--csv-img-key`); default: the first of path,
            filepath, image, image_path, filename, file.
        csv_caption_key: a CSV's caption column (open_clip's `--csv-caption-key`); default: the first of
            caption, title, text, txt.
        csv_separator: the CSV's field separator; default tab for .tsv, comma otherwise.
        val_shards: held-out image-text shards: image<->text retrieval recall@1/5/10.
        zeroshot_shards: labelled image shards (`cls` field, or `label` in the json) for zero-shot top-1/5.
        zeroshot_classnames: the class names of `zeroshot_shards`, in label order.
        zeroshot_sets: more zero-shot sets by name, each logged as `val/zeroshot/<name>/top1|top5`: labelled
            shards or an ImageNet-style class-folder set, with its class names (`clipmodule.data.val_sets`).
        batch_size: samples per device and step.
        num_workers: loader processes per device.
        image_size: side of the square model input (the model's `vision.image_size`).
        context_length: text tokens per caption (the model's `text.context_length`); used where `tokenizer` is unset.
        tokenizer: the tokenizer the model reads (set by `fit` from the model: OpenAI's BPE, or a `tokenizer.json`).
        tokenizer_folder: a folder with the `tokenizer.json` of a model whose weights came without one (a
            randomly initialised SigLIP or HF-text model, for instance).
        shuffle_buffer: samples in the shuffle buffer (references only: cheap).
        resample: draw shards with replacement (open_clip's `--dataset-resampled`); an epoch is then
            `samples_per_epoch` samples rather than a pass over the shards.
        samples_per_epoch: samples in one epoch over all ranks; default: the samples in `train_shards` (all
            sources together).
        seed: shard order, shuffling and augmentation all derive from it.
        data_card: the data card (json or md) of the training data; its sha256 tags the MLflow run.
        curation: online curation (`clipmodule.data.online_curation`); needs samples_per_epoch.
        max_unusable_samples: training stops with an error after this many unusable samples in a row
            (undecodable image, empty or missing caption), or after a whole pass over the shards without one.
    """

    # LightningCLI's constructor: each parameter is a `data.*` YAML key, so the argument count is the config's
    def __init__(self, train_shards: str | list[str] | list[TrainSourceConfig] | None = None,  # noqa: PLR0913
                 val_shards: str | list[str] | None = None,
                 zeroshot_shards: str | list[str] | None = None, zeroshot_classnames: list[str] | None = None,
                 batch_size: int = 256, num_workers: int = 4, image_size: int = 224, context_length: int = 77,
                 shuffle_buffer: int = 5000, resample: bool = False, samples_per_epoch: int | None = None,
                 seed: int = 0, data_card: str | None = None, max_unusable_samples: int = 10_000,
                 tokenizer: TokenizerSpec | None = None, tokenizer_folder: str | None = None,
                 upsampling_factors: list[float] | str | None = None, csv_image_key: str | None = None,
                 csv_caption_key: str | None = None, csv_separator: str | None = None,
                 zeroshot_sets: dict[str, ZeroShotSet] | None = None, curation: OnlineCuration | None = None):
        super().__init__()
        for name, value, least in (("batch_size", batch_size, 1), ("num_workers", num_workers, 0),
                                   ("max_unusable_samples", max_unusable_samples, 1)):
            if not isinstance(value, int) or value < least:
                raise ClipModuleError(f"data.{name} must be an integer >= {least}, got {value!r}")
        self.save_hyperparameters()  # logged as MLflow params
        # ... and stored in checkpoints, which are read weights-only: dataclass options (training sources, zero-shot
        # sets, the tokenizer) are kept as plain dicts, or every checkpoint of such a run would be refused
        for name, value in list(self.hparams.items()):
            self.hparams[name] = plain_data(value)
        self.train_shards, self.val_shards, self.zeroshot_shards = train_shards, val_shards, zeroshot_shards
        self.zeroshot_classnames = zeroshot_classnames
        self.batch_size, self.num_workers = batch_size, num_workers
        self.image_size, self.context_length = image_size, context_length
        self.shuffle_buffer, self.resample, self.seed = shuffle_buffer, resample, seed
        self.samples_per_epoch, self.data_card = samples_per_epoch, data_card
        self.max_unusable_samples = max_unusable_samples
        self.upsampling_factors, self.curation = upsampling_factors, curation
        self.csv_options = {"csv_image_key": csv_image_key, "csv_caption_key": csv_caption_key,
                            "csv_separator": csv_separator}
        # checked here, when the CLI builds the module: a wrong path or class-name file stops the run before training
        self.zeroshot_sets: list[OpenedSet] = [open_set(name, spec) for name, spec in (zeroshot_sets or {}).items()]
        self.tokenizer = (tokenizer or TokenizerSpec(context_length=context_length)).with_folder(tokenizer_folder)
        if self.tokenizer.kind != "openai_bpe" and self.tokenizer.folder is None:
            raise ClipModuleError(f"the model reads the {self.tokenizer.kind!r} tokenizer and its weights came without "
                                  "a tokenizer.json: set data.tokenizer_folder to a folder holding it")
        self._train_loader: EpochLoader | None = None
        self._training_record: dict[str, Any] | None = None  # what this fit's checkpoints say it reads
        self._resumed: tuple[dict[str, Any] | None, str] | None = None  # a checkpoint's record, and its path

    def _rank(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def train_dataset(self) -> ShardTrainDataset:
        sources = open_sources(self.train_shards, self.upsampling_factors, **self.csv_options)
        rank, world_size = self._rank()
        workers = max(1, self.num_workers)
        for source in sources:
            if not self.resample and len(source) < world_size * workers:
                of = f" ({source.describe()})" if len(sources) > 1 or source.table is not None else ""
                raise ClipModuleError(f"{len(source)} training shards{of} cannot feed {world_size} ranks x {workers} "
                                      "workers; use fewer workers, more shards, or data.resample=true")
        by_size = len(sources) > 1 and any(source.weight is None for source in sources)
        counts = [source.samples() for source in sources] if by_size or not self.samples_per_epoch else None
        samples = self.samples_per_epoch or sum(counts)
        selection = None if self.curation is None else EpochSelection(self.curation)
        if selection is not None:  # the counts are of the matched rows: other shards would be balanced wrongly
            if not self.samples_per_epoch:
                raise ClipModuleError("data.curation needs data.samples_per_epoch (e.g. `curation balance`'s rows_out)")
            selection.check_origin(shard_folders(sources))
        batches = samples // (world_size * self.batch_size)
        if batches == 0:
            raise ClipModuleError(f"{samples} training samples are fewer than one global batch "
                                  f"({world_size} x {self.batch_size})")
        paths = [path for source in sources for path in (source.shards or [source.table.source])]
        shares = mixture_shares(sources, counts or [0] * len(sources)) if len(sources) > 1 else None
        dataset = ShardTrainDataset(paths, image_transform(self.image_size, train=True), batch_size=self.batch_size,
                                    batches_per_rank=batches, rank=rank, world_size=world_size,
                                    shuffle_buffer=self.shuffle_buffer, seed=self.seed, resample=self.resample,
                                    max_unusable=self.max_unusable_samples, sources=sources, shares=shares,
                                    selection=selection)
        self._record_training_data(dataset)
        return dataset

    def _record_training_data(self, dataset: ShardTrainDataset) -> None:
        """Describes the data and the loader settings (`clipmodule.data.provenance`) for this fit's checkpoints, and
        refuses to resume from a checkpoint whose loader positions mean other samples here."""
        settings = {"seed": self.seed, "batch_size": self.batch_size, "num_workers": self.num_workers,
                    "shuffle_buffer": self.shuffle_buffer, "resample": self.resample,
                    "samples_per_epoch": self.samples_per_epoch, "batches_per_rank": dataset.batches_per_rank,
                    **({"curation": dataset.selection.record()} if dataset.selection is not None else {})}
        self._training_record = training_record(dataset.sources, dataset.shares, settings)
        if self._resumed is not None:
            (saved, checkpoint), self._resumed = self._resumed, None
            check_resume(saved, self._training_record, checkpoint)

    def state_dict(self) -> dict[str, Any]:
        """Lightning writes this into each checkpoint; `load_state_dict` gets it back on resume."""
        return {"training_data": self._training_record} if self._training_record is not None else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Called before the loaders exist: the check waits for the training data (`train_dataset`)."""
        trainer = getattr(self, "trainer", None)
        path = getattr(trainer, "ckpt_path", None)
        self._resumed = (state_dict.get("training_data"), str(path) if path else "the checkpoint")

    def train_dataloader(self) -> EpochLoader:
        self._train_loader = EpochLoader(self.train_dataset(), **self._loader_options())
        return self._train_loader

    def val_dataloader(self) -> list[StatefulDataLoader]:
        """[retrieval shards, zero-shot shards, then each of `zeroshot_sets`], whichever are set, in that order.
        A set's batches are tagged `<task>/<name>` (`clipmodule.train.validation`); a set named by a dataset spec has
        no loader (its kind's tracker reads it whole); if only those, one batch tagged SETS_READ_WHOLE (Lightning
        validates only with a loader)."""
        specs = {"retrieval": self.val_shards, "zeroshot": self.zeroshot_shards}
        loaders = [self._eval_loader(spec, task) for task, spec in specs.items() if spec is not None]
        loaders += [self._zeroshot_set_loader(opened) for opened in self.zeroshot_sets if opened.source is None]
        whole = not loaders and any(opened.source is not None for opened in self.zeroshot_sets)
        return loaders + [StatefulDataLoader([{"task": SETS_READ_WHOLE}], batch_size=None)] * whole

    def validation_sets(self) -> list[OpenedSet]:
        """The named sets (`data.zeroshot_sets`): name, task kind, class names and templates as given (None: the
        model's)."""
        return list(self.zeroshot_sets)

    def _zeroshot_set_loader(self, opened: OpenedSet) -> StatefulDataLoader:
        if opened.folder is None:
            return self._eval_loader(opened.shards, f"{opened.task}/{opened.name}")
        rank, world_size = self._rank()
        dataset = FolderEvalDataset(opened.folder, opened.classnames, image_transform(self.image_size, train=False),
                                    rank, world_size)
        return StatefulDataLoader(dataset, **self._loader_options(f"{opened.task}/{opened.name}"))

    def test_dataloader(self) -> list[StatefulDataLoader]:
        return self.val_dataloader()

    def predict_dataloader(self) -> list[StatefulDataLoader]:
        return self.val_dataloader()

    def _eval_loader(self, spec: str | list[str], task: str) -> StatefulDataLoader:
        rank, world_size = self._rank()
        dataset = ShardEvalDataset(shard_paths(spec), image_transform(self.image_size, train=False), rank, world_size)
        return StatefulDataLoader(dataset, **self._loader_options(task))

    def _loader_options(self, task: str = "train") -> dict[str, Any]:
        return {
            "batch_size": self.batch_size,
            "num_workers": self.num_workers,
            "collate_fn": TokenizingCollate(self.tokenizer, task),
            "persistent_workers": False,  # a fresh worker per epoch picks up the new epoch number
            "pin_memory": torch.cuda.is_available(),
        }

    # `_iterator` is StatefulDataLoader's private attribute, read on purpose: its public `state_dict()` starts an
    # iterator (and its worker processes) when none is running, and these counts are asked between epochs too.
    def corrupt_counts(self) -> dict[str, int]:
        """Corrupt samples and shard reads skipped so far this epoch, summed over this rank's workers."""
        if self._train_loader is None or self._train_loader._iterator is None:
            return {"corrupt_samples": 0, "corrupt_shards": 0}
        return sum_counters(self._train_loader._iterator.state_dict())

    def mix_counts(self, counted: str = "drawn") -> dict[str, int]:
        """Samples drawn from each source of a mixture so far this epoch (corrupt ones included; "used": the usable
        ones delivered, whose mix follows the shares under online curation), summed over this rank's workers."""
        if self._train_loader is None or self._train_loader._iterator is None:
            return {}
        return drawn_per_source(self._train_loader._iterator.state_dict(), counted)

    def data_card_hash(self) -> str | None:
        """The `content_hash` of the data card (`curation card` output, json or the md beside it), or None
        when no card is configured."""
        if self.data_card is None:
            return None
        path = Path(self.data_card)
        path = path.with_suffix(".json") if path.suffix == ".md" else path
        try:
            return str(json.loads(path.read_text())["content_hash"])
        except OSError as error:
            raise ClipModuleError(f"cannot read data card {path}: {error.strerror}") from None
        except (ValueError, KeyError, TypeError):
            raise ClipModuleError(f"data card {path} has no content_hash (is it a `curation card` json?)") from None

    def shards_content_hash(self, max_bytes: int = 4 << 30) -> str | None:
        """The data card's `content_hash` (the shard contract's definition) computed from the training shards
        themselves. None above `max_bytes` of shards, where hashing would take long: set `data_card` instead."""
        if self.train_shards is None:
            return None
        sources = open_sources(self.train_shards, self.upsampling_factors, **self.csv_options)
        if any(source.table is not None for source in sources):
            log.warning("training data is a table of local images: set data.data_card to tag the run with a hash")
            return None
        listed = [path for source in sources for path in source.shards]
        if any(is_remote(path) for path in listed):  # hashing them would download every shard
            log.warning("training shards are remote: set data.data_card to tag the run with their hash")
            return None
        paths = [Path(p) for p in listed]
        if sum(p.stat().st_size for p in paths) > max_bytes:
            log.warning("training shards exceed %d bytes: set data.data_card to tag the run with its hash", max_bytes)
            return None
        return content_hash(shard_records(paths))
