"""`curation decontaminate`: drop training samples that are near-copies of evaluation images.

Every evaluation image (image folders or webdataset tars) gets a perceptual hash (`imagehash`, 64 bits by
default); the hashes go into a BK-tree, which answers "every hash within Hamming distance r" by visiting a
small part of the tree instead of every pair. Each training shard is then read once: a sample whose image
hash is within `threshold` of any evaluation hash is dropped, and the others are copied, byte for byte and
in order, into a cleaned shard of the same name. Beside the output folder: `<out>.drops.parquet` (the drop
list: shard, key, the evaluation image it matched and the distance), `<out>.png` (thumbnails of the
closest matches) and `<out>.stats.json` (counts, read by `curation card`).

A perceptual hash survives resizing and re-encoding well and crops of a few percent moderately; larger
crops, flips and heavy edits need an embedding comparison, which this stage does not do.
"""

from __future__ import annotations

import io
import tarfile
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import UnidentifiedImageError

from curation.config import DecontaminateConfig
from curation.decontaminate_plot import plot_matches
from curation.engines import run_job
from curation.errors import CurationError
from curation.formats.files import atomic_path, write_json
from curation.formats.images import ImageTooLarge, open_image
from curation.formats.webdataset import (
    IMAGE_EXTENSIONS,
    ShardSpecError,
    content_hash,
    expand_shards,
    image_field,
    shard_records,
    split_member_name,
)
from curation.progress import progress_bar, report
from curation.stage import Stage, file_signature, read_json, sidecar

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


def tar_samples(path: Path) -> Iterator[tuple[str, list[tuple[tarfile.TarInfo, bytes]]]]:
    """(key, members) per webdataset sample, in file order (keys by the shard contract's member-name rule)."""
    key, members = None, []
    try:
        with tarfile.open(path, "r:*") as archive:
            for info in archive:
                data = archive.extractfile(info).read() if info.isfile() else b""
                member_key = split_member_name(info.name)[0]
                if members and member_key != key:
                    yield key, members
                    members = []
                key = member_key
                members.append((info, data))
    except (tarfile.TarError, EOFError, OSError, zlib.error) as error:
        raise CurationError(f"{path}: corrupt or truncated tar shard ({error})") from None
    if members:
        yield key, members


def sample_image(members: list[tuple[tarfile.TarInfo, bytes]]) -> bytes | None:
    """The encoded image of one sample (the shard contract's image field), None when it has none."""
    fields = {split_member_name(info.name)[1]: data for info, data in members if info.isfile()}
    name = image_field(fields)
    return fields[name] if name is not None else None


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
                    raise CurationError(f"{reference}: evaluation {error} (see --max-image-pixels)") from None
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
            if matches:
                distance, image = matches[0]
                drops.append({"shard": task.source.name, "key": key, "eval_index": image, "distance": distance})
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
    """The training tars (the shard contract's spec rule); outputs keep shard names, so names must differ."""
    try:
        found = [Path(p) for p in expand_shards(shards)]
    except ShardSpecError as error:
        raise CurationError(f"training shards: {error}") from None
    names = Counter(p.name for p in found)
    if (twice := [n for n, c in names.items() if c > 1]):
        raise CurationError(f"{twice[0]}: two training shards have this name (outputs keep shard names)")
    return found


def run_decontaminate(config: DecontaminateConfig, eval_sets: list[str], shards: list[str], out: Path,
                      overwrite: bool = False) -> dict[str, Any]:
    """Write `out/<shard>.tar` without the samples near an evaluation image, with the drop list and stats."""
    out, sources = Path(out), [Path(s) for s in eval_sets]
    train = training_shards(shards)
    for source in sources:
        if not source.exists():
            raise CurationError(f"{source}: evaluation set not found")
    eval_files = sorted(p for s in sources for p in ([s] if s.is_file() else s.rglob("*")) if p.is_file())
    settings = {k: v for k, v in asdict(config).items() if k not in ("workers", "thumbnails")}
    fingerprint = {"config": settings, "inputs": file_signature(train), "eval": file_signature(eval_files)}
    drop_list, plot = sidecar(out, ".drops.parquet"), sidecar(out, ".png")
    stage = Stage("decontaminate", out, fingerprint, overwrite, extra_outputs=(drop_list, plot),
                  inputs=(*sources, *train), made=("*.tar", f"*{RESULT_SUFFIX}"))
    if (done := stage.finished()) is not None:
        report(f"decontaminate: up to date ({done['samples_dropped']:,} of {done['samples_in']:,} dropped in {out})")
        return done
    with stage.running():
        tree, images = hash_eval_sets(sources, config)
        out.mkdir(parents=True, exist_ok=True)
        tasks = [ShardTask(src, out / src.name) for src in train]
        todo = [t for t in tasks if not (t.output.exists() and result_path(t.output).exists())]

        def record(result: dict[str, Any]) -> None:
            stage.created(out / result["name"])
            stage.created(result_path(out / result["name"]))

        run_job(DecontaminateJob(tree, config), todo, workers=config.workers, on_result=record)
        results = [read_json(result_path(t.output), "shard result") for t in tasks]
        drops = _drop_rows(results, images)
        _write_drop_list(drops, drop_list)
        if drops and config.thumbnails:
            shown = drops[: config.thumbnails]
            plot_matches(shown, _matched_images(shown, dict(zip((t.source.name for t in tasks), train))), plot)
        stats = stage.finish(_stats(config, sources, images, tasks, results, drops, drop_list,
                                    plot if plot.exists() else None))
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
    return [(load_eval_image(d["eval_image"]), train_images[d["shard"], d["key"]]) for d in drops]


def _drop_rows(results: list[dict[str, Any]], images: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = [{"shard": d["shard"], "key": d["key"], "distance": d["distance"],
             "eval_set": images[d["eval_index"]]["set"], "eval_image": images[d["eval_index"]]["image"]}
            for r in results for d in r["drops"]]
    return sorted(rows, key=lambda row: (row["distance"], row["shard"], row["key"]))


def _write_drop_list(drops: list[dict[str, Any]], path: Path) -> None:
    schema = pa.schema([("shard", pa.string()), ("key", pa.string()), ("distance", pa.int32()),
                        ("eval_set", pa.string()), ("eval_image", pa.string())])
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
            "distance_histogram": {str(d): n for d, n in sorted(Counter(d["distance"] for d in drops).items())},
            "top_matches": drops[:TOP_MATCHES], "drop_list": str(drop_list),
            "thumbnails": str(plot) if plot else None, "content_hash": content_hash(shards), "shards": shards}
