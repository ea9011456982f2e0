"""`curation embed`: image and caption embeddings of webdataset shards, one part per shard, in the embedding
contract's layout (`clipformats.embeddings`: clip-retrieval's img_emb/ text_emb/ metadata/).

The model is a plugin: `config.embedder` names a class (`module:Class`, default
`clipmodule.embedding:ShardEmbedder`, which reads any model `clipmodule.load` reads) that this stage imports
by name at run time, so curation never imports a model library. Each worker (a local process, or a Ray actor
with `--engine ray`) builds it once and loads the model; each shard then becomes one part. A part is done
when its metadata file exists (written last, atomically), so a killed run resumes with the shards it had not
finished, and the output does not depend on the engine or the number of workers.

GPUs: `--device cuda` runs one worker's model on a GPU; for several GPUs, `clipmodule predict` (Lightning,
DDP) writes the same layout (parts per rank and chunk instead of per shard).
"""

from __future__ import annotations

import importlib
import inspect
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from clipformats.embeddings import (
    FOLDERS,
    EmbedderError,
    EmbeddingFilesError,
    ShardEmbedder,
    begin_set,
    finish_set,
    metadata_path,
    part_info,
    part_name,
    part_paths,
    remove_part_temporaries,
    write_part,
)
from clipformats.webdataset import ShardSpecError, expand_shards, recorded_samples
from curation.config import EmbedConfig
from curation.engines import run_job
from curation.errors import CurationError
from curation.progress import report
from curation.stage import Stage, file_signature


def load_embedder(class_path: str) -> ShardEmbedder:
    """An instance of the class `module:Class` names; one line when it cannot be imported or is no embedder."""
    module_name, _, class_name = class_path.partition(":")
    if not module_name or not class_name:
        raise CurationError(f"embedder {class_path!r}: expected module:Class, e.g. clipmodule.embedding:ShardEmbedder")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise CurationError(f"embedder {class_path!r}: cannot import {module_name} ({error})") from None
    cls = getattr(module, class_name, None)
    if cls is None:
        raise CurationError(f"embedder {class_path!r}: {module_name} has no {class_name}")
    # checked on the class, before anything it names is called: `os:system` must never run
    if not inspect.isclass(cls):
        raise CurationError(f"embedder {class_path!r}: a {type(cls).__name__}, not a class implementing "
                            "setup() and embed_shard() (see ShardEmbedder)")
    lacking = [name for name in ("setup", "embed_shard") if not inspect.isfunction(getattr(cls, name, None))]
    if lacking:
        raise CurationError(f"embedder {class_path!r}: the class has no {lacking[0]}() method (see ShardEmbedder)")
    try:
        return cls()
    except TypeError as error:
        raise CurationError(f"embedder {class_path!r}: cannot be built without arguments ({error})") from None


@dataclass(frozen=True)
class EmbedTask:
    shard: Path
    out: Path
    part: str


@dataclass(frozen=True)
class EmbedJob:
    """`curation embed` for an engine: each worker loads the model once (`setup`), then embeds its shards."""

    config: EmbedConfig
    description: str = "embed"

    def setup(self) -> tuple[ShardEmbedder, dict[str, Any]]:
        embedder = load_embedder(self.config.embedder)
        try:
            model = embedder.setup(self.config.model, self.config.device, self.config.batch_size,
                                   self.config.threads, self.config.max_image_pixels)
        except EmbedderError as error:
            raise CurationError(str(error)) from None
        return embedder, dict(model)

    def run(self, state: tuple[ShardEmbedder, dict[str, Any]], task: EmbedTask) -> dict[str, Any]:
        if metadata_path(task.out, task.part).exists():  # done by an earlier, interrupted run
            return {**part_info(task.out, task.part), "created": False}
        embedder, model = state
        try:
            shard = embedder.embed_shard(str(task.shard))
        except EmbedderError as error:
            raise CurationError(str(error)) from None
        rows = len(shard.metadata.get("key", ()))
        if shard.image.shape[0] != rows or shard.text.shape[0] != rows:
            raise CurationError(f"{task.shard}: the embedder returned {shard.image.shape[0]} image and "
                                f"{shard.text.shape[0]} text rows for {rows} keys")
        info = {"name": task.part, "shard": task.shard.name, "rows_in": shard.samples, "rows_out": rows,
                "skipped": dict(shard.skipped), "model": model}
        try:
            write_part(task.out, task.part, shard.image, shard.text,
                       {**shard.metadata, "shard": [task.shard.name] * rows}, self.config.dtype, info)
        except EmbeddingFilesError as error:
            raise CurationError(f"{task.shard}: {error}") from None
        return {**info, "created": True}


def embed_shards(shards: list[str]) -> list[Path]:
    """The shards (the shard contract's spec rule); parts are named after shard stems, so stems must differ."""
    try:
        found = [Path(p) for p in expand_shards(shards)]
    except ShardSpecError as error:
        raise CurationError(f"shards: {error}") from None
    stems = Counter(part_name(p) for p in found)
    if (twice := [s for s, n in stems.items() if n > 1]):
        raise CurationError(f"{twice[0]}: two shards have this name (each shard's embeddings are named after it)")
    return found


def model_signature(model: str) -> list[dict[str, Any]]:
    """The model's files (a checkpoint, or every file of a checkpoint folder); none for a model name."""
    path = Path(model)
    if path.is_file():
        return file_signature([path])
    return file_signature(sorted(p for p in path.rglob("*") if p.is_file())) if path.is_dir() else []


def run_embed(config: EmbedConfig, shards: list[str], out: Path, overwrite: bool = False) -> dict[str, Any]:
    """Write `out/{img_emb,text_emb,metadata}/` with one part per shard, and `<out>.stats.json`."""
    out, sources = Path(out), embed_shards(shards)
    # what decides the numbers; device, batch size, threads, workers and engine only decide the speed
    settings = {k: v for k, v in asdict(config).items()
                if k in ("model", "embedder", "dtype", "max_image_pixels")}
    fingerprint = {"config": settings, "model_files": model_signature(config.model),
                   "inputs": file_signature(sources)}
    stage = Stage("embed", out, fingerprint, overwrite, inputs=tuple(sources), made=FOLDERS)
    if (done := stage.finished()) is not None:
        report(f"embed: up to date ({done['rows_out']:,} of {done['rows_in']:,} samples embedded in {out})")
        return done
    with stage.running():
        begin_set(out)
        tasks = [EmbedTask(src, out, part_name(src)) for src in sources]
        for task in tasks:
            remove_part_temporaries(out, task.part)
        todo = [t for t in tasks if not metadata_path(out, t.part).exists()]
        counts = [recorded_samples(t.shard) for t in todo]
        total = None if None in counts else sum(counts)

        def record(result: dict[str, Any]) -> None:
            if result.get("created"):
                for path in part_paths(out, result["name"]):
                    stage.created(path)

        started = time.perf_counter()
        outcome = run_job(EmbedJob(config, f"embed ({Path(config.model).name})"), todo, engine=config.engine,
                          workers=config.workers, ray_address=config.ray_address, total_rows=total,
                          on_result=record)
        seconds = time.perf_counter() - started
        stats = _stats(config, tasks, outcome.results, seconds)
        finish_set(out, [t.part for t in tasks], stats["model"])
        stats = stage.finish(stats)
    report(f"embed: {stats['rows_out']:,} of {stats['rows_in']:,} samples of {len(tasks)} shards embedded "
           f"(dim {stats['model'].get('embed_dim')}, {config.dtype}) → {out}")
    return stats


def _stats(config: EmbedConfig, tasks: list[EmbedTask], results: list[dict[str, Any]],
           seconds: float) -> dict[str, Any]:
    infos = [part_info(t.out, t.part) for t in tasks]
    skipped: Counter[str] = Counter()
    for info in infos:
        skipped.update(info.get("skipped", {}))
    embedded_now = sum(r.get("rows_out", 0) for r in results if r.get("created"))
    model = next((info["model"] for info in infos if info.get("model")), {})
    path = Path(config.model).resolve() if Path(config.model).exists() else None
    return {"model": {"name": config.model, "path": str(path) if path else None, "embedder": config.embedder, **model},
            "dtype": config.dtype,
            "normalised": "L2 (unit rows)", "rows_in": sum(i["rows_in"] for i in infos),
            "rows_out": sum(i["rows_out"] for i in infos), "skipped": dict(sorted(skipped.items())),
            "embedded_this_run": embedded_now, "seconds_this_run": round(seconds, 3),
            "samples_per_second": round(embedded_now / seconds, 2) if embedded_now and seconds > 0 else None,
            "shards": [{"name": t.shard.name, "path": str(t.shard.resolve()), "part": t.part,
                        "samples": i["rows_in"], "embedded": i["rows_out"]} for t, i in zip(tasks, infos)],
            "engine": config.engine, "device": config.device}



