"""`curation decontaminate`: planted evaluation images are found and dropped, unrelated ones kept; bad input fails
cleanly."""

from __future__ import annotations

import io
import json
import random
import tarfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image, ImageDraw

from curation.cli import main
from curation.config import DecontaminateConfig
from curation.stages.decontaminate.decontamination import BKTree, run_decontaminate, tar_samples

EVAL_IMAGES = 24
PLANTED = 16  # of the evaluation images, planted (edited) in the training shards
UNRELATED = 40


def scene(seed: int, size: int = 128) -> Image.Image:
    """A random picture: a smooth colour field with a dozen shapes (distinct scenes hash far apart)."""
    rng = np.random.default_rng(seed)
    image = Image.fromarray((rng.random((8, 8, 3)) * 255).astype(np.uint8)).resize((size, size), Image.BICUBIC)
    draw = ImageDraw.Draw(image)
    for _ in range(12):
        x, y = (int(v) for v in rng.integers(0, size, 2))
        w, h = (int(v) for v in rng.integers(10, size // 2, 2))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x, y, x + w, y + h), fill=colour)
    return image


def encode(image: Image.Image, kind: str = "JPEG", quality: int = 92) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, kind, **({"quality": quality} if kind == "JPEG" else {}))
    return buffer.getvalue()


EDITS = {
    "copy": lambda im: encode(im),
    "resized": lambda im: encode(im.resize((80, 80))),
    "jpeg q30": lambda im: encode(im, quality=30),
    "cropped 2%": lambda im: encode(im.crop((3, 0, 128, 125))),
}


def write_shard(path: Path, samples: list[tuple[str, bytes, str]]) -> None:
    with tarfile.open(path, "w") as tar:
        for key, image, caption in samples:
            for suffix, payload in ((".jpg", image), (".txt", caption.encode())):
                info = tarfile.TarInfo(key + suffix)
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))


@pytest.fixture
def planted(tmp_path: Path) -> tuple[Path, Path, set[str]]:
    """An evaluation folder (PNG), two training shards: planted edits of evaluation images among unrelated ones."""
    eval_dir = tmp_path / "eval" / "class_a"
    eval_dir.mkdir(parents=True)
    for i in range(EVAL_IMAGES):
        scene(i).save(eval_dir / f"{i:03d}.png")
    samples, planted_keys = [], set()
    for i in range(PLANTED):
        edit = list(EDITS)[i % len(EDITS)]
        samples.append((f"p{i:03d}", EDITS[edit](scene(i)), f"planted {edit}"))
        planted_keys.add(f"p{i:03d}")
    samples += [(f"u{i:03d}", encode(scene(1000 + i)), "unrelated") for i in range(UNRELATED)]
    random.Random(0).shuffle(samples)
    shards = tmp_path / "shards"
    shards.mkdir()
    half = len(samples) // 2
    write_shard(shards / "00000.tar", samples[:half])
    write_shard(shards / "00001.tar", samples[half:])
    return tmp_path / "eval", shards, planted_keys


def test_bk_tree_finds_exactly_the_hashes_within_the_radius():
    rng = random.Random(1)
    keys = [rng.getrandbits(64) for _ in range(2000)]
    tree = BKTree()
    for index, key in enumerate(keys):
        tree.add(key, index)
    for probe in keys[:20] + [rng.getrandbits(64) for _ in range(20)]:
        expected = sorted(i for i, key in enumerate(keys) if (key ^ probe).bit_count() <= 22)
        assert sorted(v for _, v in tree.search(probe, 22)) == expected


def test_planted_images_are_dropped_and_unrelated_kept(planted, tmp_path):
    eval_dir, shards, planted_keys = planted
    out = tmp_path / "clean"
    stats = run_decontaminate(DecontaminateConfig(workers=1), [str(eval_dir)], [str(shards)], out)
    dropped = {row["key"] for row in pq.read_table(tmp_path / "clean.drops.parquet").to_pylist()}
    true_positives = len(dropped & planted_keys)
    precision, recall = true_positives / max(len(dropped), 1), true_positives / len(planted_keys)
    print(f"planted set: precision {precision:.2f}, recall {recall:.2f} ({len(dropped)} dropped)")
    assert precision == 1.0 and recall >= 0.9
    kept = {key for shard in sorted(out.glob("*.tar")) for key, _ in tar_samples(shard)}
    assert not kept & dropped and {f"u{i:03d}" for i in range(UNRELATED)} <= kept
    assert stats["samples_in"] == PLANTED + UNRELATED and stats["samples_dropped"] == len(dropped)
    assert stats["eval_images"] == EVAL_IMAGES and (tmp_path / "clean.png").stat().st_size > 10_000
    # kept samples are copied byte for byte, captions included
    original = {k: m for shard in sorted(shards.glob("*.tar")) for k, m in tar_samples(shard)}
    cleaned = {k: m for shard in sorted(out.glob("*.tar")) for k, m in tar_samples(shard)}
    assert all([d for _, d in cleaned[k]] == [d for _, d in original[k]] for k in cleaned)


def test_rerun_is_a_no_op_and_the_card_reports_the_drops(planted, tmp_path):
    from curation.config import WorkLayout
    from curation.stage import read_json, stats_path
    from curation.stages import registry

    eval_dir, shards, _ = planted
    layout = WorkLayout(tmp_path / "work")
    first = run_decontaminate(DecontaminateConfig(workers=2), [str(eval_dir)], [str(shards)], layout.decontaminated)
    mtime = (layout.decontaminated / "00000.tar").stat().st_mtime_ns
    assert run_decontaminate(DecontaminateConfig(), [str(eval_dir)], [str(shards)], layout.decontaminated) == first
    assert (layout.decontaminated / "00000.tar").stat().st_mtime_ns == mtime
    stats = read_json(stats_path(layout.decontaminated))  # what the card reads
    card = registry().get("decontaminate").card
    section = card.section(stats)
    assert section["content_hash"] == first["content_hash"] and len(stats["shards"]) == 2
    text = card.markdown(section)
    assert f"{first['samples_dropped']} of {first['samples_in']} training samples dropped" in text
    assert "### Closest matches" in text and "![closest matches]" in text


def cli(*args: str) -> int:
    return main(["decontaminate", *args])


def test_bad_input_is_one_line_and_leaves_nothing(planted, tmp_path, capsys):
    eval_dir, shards, _ = planted
    empty = tmp_path / "empty_eval"
    (empty / "sub").mkdir(parents=True)
    (empty / "notes.txt").write_text("no images here")
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    good = (shards / "00000.tar").read_bytes()
    (corrupt / "00000.tar").write_bytes(good)
    (corrupt / "00001.tar").write_bytes(good[: len(good) // 2])  # truncated mid-member
    cases = {
        "empty eval folder": ([str(empty)], [str(shards)], "empty_eval: no images"),
        "missing eval set": ([str(tmp_path / "absent")], [str(shards)], "absent: evaluation set not found"),
        "corrupt shard": ([str(eval_dir)], [str(corrupt)], "00001.tar: corrupt or truncated tar shard"),
        "no shards": ([str(eval_dir)], [str(empty)], "no .tar shards in directory"),
    }
    for name, (eval_sets, shard_args, message) in cases.items():
        out = tmp_path / f"out-{name.replace(' ', '_')}"
        assert cli("--eval", *eval_sets, "--shards", *shard_args, "--out", str(out), "--workers", "1") == 2, name
        error = capsys.readouterr().err.strip().splitlines()[-1]
        assert error.startswith("curation decontaminate: error:") and message in error, (name, error)
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(out.name)], name


def test_stats_file_records_settings(planted, tmp_path):
    eval_dir, shards, _ = planted
    out = tmp_path / "clean"
    assert cli("--eval", str(eval_dir), "--shards", str(shards), "--out", str(out), "--threshold", "0",
               "--workers", "1") == 0
    stats = json.loads((tmp_path / "clean.stats.json").read_text())
    assert stats["finished"] and stats["fingerprint"]["config"]["threshold"] == 0
    assert stats["samples_dropped"] == stats["distance_histogram"].get("0", 0) >= 1  # exact copies only


def test_decompression_bombs_are_a_line_in_the_eval_set_and_a_count_in_the_shards(tmp_path, capsys):
    from tests.conftest import png_header

    bomb = png_header(30000, 30000)  # 900 Mpx announced: decoding would take 2.7 GB
    eval_dir = tmp_path / "eval"
    eval_dir.mkdir()
    (eval_dir / "a.png").write_bytes(encode(scene(1), "PNG"))
    (eval_dir / "bomb.png").write_bytes(bomb)
    shards = tmp_path / "shards"
    shards.mkdir()
    write_shard(shards / "00000.tar", [("000", encode(scene(2)), "x"), ("001", bomb, "y"),
                                       ("002", encode(scene(1)), "z")])
    out = tmp_path / "clean"
    assert cli("--eval", str(eval_dir), "--shards", str(shards), "--out", str(out), "--workers", "1") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "bomb.png: evaluation image over the pixel limit (89,478,485 pixels)" in err
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("clean")]
    (eval_dir / "bomb.png").unlink()
    assert cli("--eval", str(eval_dir), "--shards", str(shards), "--out", str(out), "--workers", "1") == 0
    stats = json.loads((tmp_path / "clean.stats.json").read_text())
    assert stats["over_pixel_limit_kept"] == 1 and stats["samples_dropped"] == 1 and stats["samples_kept"] == 2
