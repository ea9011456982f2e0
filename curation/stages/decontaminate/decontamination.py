"""`curation decontaminate`: drop training samples that are near-copies of evaluation images.

Every evaluation image (image folders or webdataset tars) gets a perceptual hash (`imagehash`, 64 bits by
default); the hashes go into a BK-tree, which answers "every hash within Hamming distance r" by visiting a
small part of the tree instead of every pair. Each training shard is then read once: a sample whose image
hash is within `threshold` of any evaluation hash is dropped, and the others are copied, byte for byte and
in order, into a cleaned shard of the same name. Beside the output folder: `<out>.drops.parquet` (the drop
list: shard, key, the evaluation image it matched and the distance), `<out>.png` (thumbnails of the
closest matches) and `<out>.stats.json` (counts, read by `curation card`).

A perceptual hash survives resizing and re-encoding well and crops of a few percent moderately; larger
crops, flips and heavy edits need an embedding comparison: the embedding pass (`eval_embeddings`, with the
training samples' embedding folder) also drops a training sample whose image embedding has at least
`embedding_threshold` cosine with an evaluation image's (exact search: every training row against every
evaluation row, in blocks). The drop list says which pass caught each sample (`phash` first).
"""

from __future__ import annotations

import io
import tarfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import UnidentifiedImageError

from clipformats.files import atomic_path, write_json
from clipformats.images import ImageTooLarge, open_image
from clipformats.webdataset import IMAGE_EXTENSIONS, content_hash, shard_records
from curation.config import DecontaminateConfig
from curation.decontaminate_plot import plot_matches
from curation.embedding_rows import embedding_files, load_rows, precision_recall, read_truth, reference_set
from curation.engines import run_job
from curation.errors import CurationError
from curation.progress import progress_bar, report
from curation.shardio import input_shards, sample_image, tar_samples
from curation.stage import Stage, file_signature, read_json, sidecar
from curation.stages.sieve import backfill_identity, inherited_identity

IMAGE_SUFFIXES = tuple(f".{extension}" for extension in IMAGE_EXTENSIONS)
RESULT_SUFFIX = "_decontamination.json"
TOP_MATCHES = 50


class BKTree:
    """Integers under Hamming distance. A node's children are keyed by their distance to it, so by the
    triangle inequality a search of radius r only descends into children keyed d - r … d + r."""

    def __init__(self) -> None:
        self._root: list | None = None  # [hash, value, {distance: child}]
        self.size = 0

    def add(self, key: int, value: Any) -> None:
        self.size += 1
        if self._root is None:
            self._root = [key, value, {}]
            return
        node = self._root
        while True:
            distance = (key ^ node[0]).bit_count()
            child = node[2].get(distance)
            if child is None:
                node[2][distance] = [key, value, {}]
                return
            node = child

    def search(self, key: int, radius: int) -> list[tuple[int, Any]]:
        """(distance, value) of every entry within `radius` of `key`, closest first."""
        found, stack = [], [self._root] if self._root is not None else []
        while stack:
            node = stack.pop()
            distance = (key ^ node[0]).bit_count()
            if distance <= radius:
                found.append((distance, node[1]))
            stack.extend(child for d, child in node[2].items() if distance - radius <= d <= distance + radius)
        return sorted(found, key=lambda item: item[0])


def image_hash(data: bytes, config: DecontaminateConfig) -> int | None:
    """The perceptual hash of encoded image bytes as an integer; None when the bytes do not decode,
    `ImageTooLarge` when the header announces more pixels than `config.max_image_pixels` (nothing decoded)."""
    import imagehash  # here: it loads scipy, which `curation --help` and the other stages do not need

    try:
        with open_image(data, config.max_image_pixels) as image:
            bits = getattr(imagehash, config.hash)(image.convert("RGB"), hash_size=config.hash_size).hash
    except ImageTooLarge:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        return None
    return int("".join("1" if bit else "0" for bit in bits.flatten()), 2)


# ---- evaluation images --------------------------------------------------------------------------------

def eval_images(source: Path) -> Iterator[tuple[str, bytes]]:
    """(reference, bytes) of each image of one evaluation set: a folder (searched recursively) or a tar."""
    if source.is_dir():
        for path in sorted(p for p in source.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()):
            yield str(path), path.read_bytes()
    elif source.is_file() and tarfile.is_tarfile(source):
        for key, members in tar_samples(source):
            if (data := sample_image(members)) is not None:
                yield f"{source}::{key}", data
    elif source.exists():
        raise CurationError(f"{source}: evaluation set must be a folder of images or a webdataset .tar")
    else:
        raise CurationError(f"{source}: evaluation set not found")


def load_eval_image(reference: str) -> bytes:
    if "::" not in reference:
        return Path(reference).read_bytes()
    shard, key = reference.rsplit("::", 1)
    return next(sample_image(members) for k, members in tar_samples(Path(shard)) if k == key)


def hash_eval_sets(sources: list[Path], config: DecontaminateConfig) -> tuple[BKTree, list[dict[str, Any]]]:
    """The BK-tree of every evaluation image's hash (values: indices into the returned image list)."""
    tree, images = BKTree(), []
    with progress_bar("hash evaluation images", None) as advance:
        for source in sources:
            before = len(images)
            for reference, data in eval_images(source):
                try:
                    digest = image_hash(data, config)
                except ImageTooLarge as error:
                    raise CurationError(f"{reference}: evaluation {error} (see --max_image_pixels)") from None
                if digest is None:
                    raise CurationError(f"{reference}: evaluation image does not decode")
                tree.add(digest, len(images))
                images.append({"set": str(source), "image": reference})
                advance(1)
            if len(images) == before:
                raise CurationError(f"{source}: no images ({', '.join(IMAGE_SUFFIXES)}) in this evaluation set")
    return tree, images


# ---- training shards ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class ShardTask:
    source: Path
    output: Path
    embedding_matches: dict[str, tuple[int, float]] = field(default_factory=dict)
    """Key → (evaluation row, cosine) of this shard's samples the embedding pass matched."""


def result_path(output: Path) -> Path:
    return output.with_name(output.name.split(".")[0] + RESULT_SUFFIX)


def clean_shard(task: ShardTask, tree: BKTree, config: DecontaminateConfig) -> dict[str, Any]:
    """Copy the samples of one shard that match no evaluation image; the drops go to its result file."""
    samples = kept = undecodable = too_large = 0
    drops = []
    with atomic_path(task.output) as tmp, tarfile.open(tmp, "w") as cleaned:
        for key, members in tar_samples(task.source):
            samples += 1
            data = sample_image(members)
            try:
                digest = image_hash(data, config) if data is not None else None
            except ImageTooLarge:  # cannot be compared: kept and counted, as an undecodable sample is
                digest, too_large = None, too_large + 1
            matches = tree.search(digest, config.threshold) if digest is not None else []
            undecodable += digest is None
            near = task.embedding_matches.get(key)
            if matches or near:
                drop = {"shard": task.source.name, "key": key, "pass": "phash" if matches else "embedding",
                        "eval_index": matches[0][1] if matches else None,
                        "distance": matches[0][0] if matches else None,
                        "eval_row": near[0] if near else None, "cosine": near[1] if near else None}
                drops.append(drop)
                continue
            kept += 1
            for info, payload in members:
                cleaned.addfile(info, io.BytesIO(payload) if info.isfile() else None)
    result = {"name": task.output.name, "rows_in": samples, "kept": kept, "undecodable": undecodable,
              "over_pixel_limit": too_large, "drops": drops}
    write_json(result_path(task.output), result)
    return result


@dataclass(frozen=True)
class DecontaminateJob:
    """`curation decontaminate` for an engine: the evaluation hashes travel with the job, once per worker."""

    tree: BKTree
    config: DecontaminateConfig
    description: str = "decontaminate"

    def setup(self) -> None:
        return None

    def run(self, state: None, task: ShardTask) -> dict[str, Any]:
        return clean_shard(task, self.tree, self.config)


def training_shards(shards: list[str]) -> list[Path]:
    return input_shards(shards, "training shards")


def embedding_matches(train: np.ndarray, evaluation: np.ndarray, threshold: float) -> dict[int, tuple[int, float]]:
    """Training row → (nearest evaluation row, cosine) for the rows whose best cosine is at least `threshold`."""
    found = {}
    for start in range(0, len(train), 4096):
        sims = train[start : start + 4096] @ evaluation.T
        best = sims.argmax(axis=1)
        cosine = sims[np.arange(len(best)), best]
        for row in np.flatnonzero(cosine >= threshold):
            found[start + int(row)] = (int(best[row]), min(float(cosine[row]), 1.0))  # fp16 rows: 1.0002
    return found


def _embedding_pass(config: DecontaminateConfig, train: list[Path], embeddings: Path | None,
                    sources: list[Path]) -> tuple[dict[str, dict[str, tuple[int, float]]], list[dict[str, str]]]:
    """Per training shard, key → (evaluation row, cosine) of its samples near an evaluation embedding; and each
    evaluation row's set and reference (`<eval tar>::key` where that tar is among the evaluation sets)."""
    references, image = [], []
    tars = {s.name: s for s in sources if s.is_file()}
    for folder in map(Path, config.eval_embeddings):
        refs, vectors, _ = reference_set(folder, "decontaminate.eval_embeddings")
        for ref in refs:
            shard, key = ref.split("::", 1)
            references.append({"set": str(folder),
                               "image": f"{tars[shard]}::{key}" if shard in tars else f"{folder}/{ref}"})
        image.append(vectors)
    rows = load_rows(train, embeddings, text=False)
    matched: dict[str, dict[str, tuple[int, float]]] = {}
    present = np.flatnonzero(rows.embedded)  # samples the embed stage skipped cannot be compared: kept
    for at, near in embedding_matches(rows.image[present], np.concatenate(image), config.embedding_threshold).items():
        row = int(present[at])
        matched.setdefault(rows.shard[row], {})[rows.key[row]] = near
    return matched, references


def _embedding_fingerprint(config: DecontaminateConfig, train: list[Path], embeddings: Path | None) -> dict:
    if not config.eval_embeddings:
        return {}
    if embeddings is None:
        raise CurationError("decontaminate: --eval_embeddings needs --embeddings (the training shards' embedding "
                            "folder, `curation embed`)")
    references = [p for folder in config.eval_embeddings for p in reference_set(Path(folder), "eval embeddings")[2]]
    return {"embeddings": file_signature(embedding_files(Path(embeddings), train)),
            "eval_embeddings": file_signature(references)}


def run_decontaminate(config: DecontaminateConfig, eval_sets: list[str], shards: list[str], out: Path,
                      overwrite: bool = False, embeddings: Path | None = None) -> dict[str, Any]:
    """Write `out/<shard>.tar` without the samples near an evaluation image (by hash, and by embedding when
    `config.eval_embeddings` and the training `embeddings` are given), with the drop list and stats."""
    out, sources = Path(out), [Path(s) for s in eval_sets]
    train = training_shards(shards)
    for source in sources:
        if not source.exists():
            raise CurationError(f"{source}: evaluation set not found")
    eval_files = sorted(p for s in sources for p in ([s] if s.is_file() else s.rglob("*")) if p.is_file())
    settings = {k: v for k, v in asdict(config).items() if k not in ("workers", "thumbnails")}
    fingerprint = {"config": settings, "inputs": file_signature(train), "eval": file_signature(eval_files),
                   **_embedding_fingerprint(config, train, embeddings)}
    if config.truth is not None:
        fingerprint["truth"] = file_signature([config.truth]) if config.truth.is_file() else str(config.truth)
    drop_list, plot = sidecar(out, ".drops.parquet"), sidecar(out, ".png")
    stage = Stage("decontaminate", out, fingerprint, overwrite, extra_outputs=(drop_list, plot),
                  inputs=(*sources, *train, *([Path(embeddings)] if embeddings else []),
                          *map(Path, config.eval_embeddings)), made=("*.tar", f"*{RESULT_SUFFIX}"))
    if (done := stage.finished()) is not None:
        done = backfill_identity(stage, done, train)
        report(f"decontaminate: up to date ({done['samples_dropped']:,} of {done['samples_in']:,} dropped in {out})")
        return done
    with stage.running():
        truth = read_truth(config.truth) if config.truth is not None else None
        tree, images = hash_eval_sets(sources, config)
        near, references = _embedding_pass(config, train, embeddings, sources) if config.eval_embeddings else ({}, [])
        out.mkdir(parents=True, exist_ok=True)
        tasks = [ShardTask(src, out / src.name, near.get(src.name, {})) for src in train]
        todo = [t for t in tasks if not (t.output.exists() and result_path(t.output).exists())]

        def record(result: dict[str, Any]) -> None:
            stage.created(out / result["name"])
            stage.created(result_path(out / result["name"]))

        run_job(DecontaminateJob(tree, config), todo, workers=config.workers, on_result=record)
        results = [read_json(result_path(t.output), "shard result") for t in tasks]
        drops = _drop_rows(results, images, references)
        _write_drop_list(drops, drop_list)
        if drops and config.thumbnails:
            shown = drops[: config.thumbnails]
            plot_matches(shown, _matched_images(shown, dict(zip((t.source.name for t in tasks), train))), plot)
        stats = _stats(config, sources, images, tasks, results, drops, drop_list, plot if plot.exists() else None)
        stats["embedding_pass"] = _embedding_stats(config, references, drops) if config.eval_embeddings else None
        stats["truth"] = precision_recall({(d["shard"], d["key"]) for d in drops}, truth) if truth else None
        stats = stage.finish({**stats, **inherited_identity(train)})
    report(f"decontaminate: dropped {stats['samples_dropped']:,} of {stats['samples_in']:,} training samples within "
           f"distance {config.threshold} of {stats['eval_images']:,} evaluation images → {out}")
    return stats


def _matched_images(drops: list[dict[str, Any]], shards: dict[str, Path]) -> list[tuple[bytes, bytes]]:
    """(evaluation image, dropped training image) bytes of each drop, each training shard read once."""
    wanted = {(d["shard"], d["key"]) for d in drops}
    train_images = {}
    for shard in sorted({d["shard"] for d in drops}):
        for key, members in tar_samples(shards[shard]):
            if (shard, key) in wanted:
                train_images[shard, key] = sample_image(members)
    return [(_eval_image_or_none(d["eval_image"]), train_images[d["shard"], d["key"]]) for d in drops]


def _eval_image_or_none(reference: str) -> bytes | None:
    """An evaluation image's bytes; None for an embedding row whose tar is not among the evaluation sets."""
    shard = reference.rsplit("::", 1)[0]
    return load_eval_image(reference) if "::" not in reference or Path(shard).is_file() else None


def _drop_rows(results: list[dict[str, Any]], images: list[dict[str, Any]],
               references: list[dict[str, str]]) -> list[dict[str, Any]]:
    """The drop list: hash matches (closest first), then embedding-only matches (highest cosine first)."""
    rows = []
    for d in (d for r in results for d in r["drops"]):
        matched = images[d["eval_index"]] if d.get("eval_index") is not None else references[d["eval_row"]]
        rows.append({"shard": d["shard"], "key": d["key"], "pass": d.get("pass", "phash"), "distance": d["distance"],
                     "cosine": d.get("cosine"), "eval_set": matched["set"], "eval_image": matched["image"]})
    return sorted(rows, key=lambda row: (row["pass"] != "phash", row["distance"] or 0, -(row["cosine"] or 0),
                                         row["shard"], row["key"]))


def _embedding_stats(config: DecontaminateConfig, references: list[dict[str, str]],
                     drops: list[dict[str, Any]]) -> dict[str, Any]:
    cosines = [d["cosine"] for d in drops if d["cosine"] is not None]
    return {"eval_embeddings": list(config.eval_embeddings), "threshold": config.embedding_threshold,
            "eval_rows": len(references), "samples_matched": len(cosines),
            "samples_dropped_only_by_embedding": sum(d["pass"] == "embedding" for d in drops),
            "min_cosine": round(min(cosines), 6) if cosines else None}


def _write_drop_list(drops: list[dict[str, Any]], path: Path) -> None:
    schema = pa.schema([("shard", pa.string()), ("key", pa.string()), ("pass", pa.string()),
                        ("distance", pa.int32()), ("cosine", pa.float64()), ("eval_set", pa.string()),
                        ("eval_image", pa.string())])
    with atomic_path(path) as tmp:
        pq.write_table(pa.Table.from_pylist(drops, schema=schema), tmp)


def _stats(config: DecontaminateConfig, sources: list[Path], images: list[dict[str, Any]], tasks: list[ShardTask],
           results: list[dict[str, Any]], drops: list[dict[str, Any]], drop_list: Path,
           plot: Path | None) -> dict[str, Any]:
    shards = shard_records([t.output for t in tasks], samples={r["name"]: r["kept"] for r in results})
    samples_in = sum(r["rows_in"] for r in results)
    per_set = Counter(image["set"] for image in images)
    dropped_by_set = Counter(d["eval_set"] for d in drops)
    return {"hash": config.hash, "hash_bits": config.hash_size ** 2, "threshold": config.threshold,
            "eval_sets": [{"source": str(s), "images": per_set[str(s)], "training_samples_dropped":
                           dropped_by_set[str(s)]} for s in sources],
            "eval_images": len(images), "samples_in": samples_in, "samples_dropped": len(drops),
            "samples_kept": samples_in - len(drops), "undecodable_kept": sum(r["undecodable"] for r in results),
            "over_pixel_limit_kept": sum(r.get("over_pixel_limit", 0) for r in results),
            "distance_histogram": {str(d): n for d, n in sorted(Counter(d["distance"] for d in drops
                                                                          if d["distance"] is not None).items())},
            "dropped_by_pass": dict(Counter(d["pass"] for d in drops)),
            "top_matches": drops[:TOP_MATCHES], "drop_list": str(drop_list),
            "thumbnails": str(plot) if plot else None, "content_hash": content_hash(shards), "shards": shards}
