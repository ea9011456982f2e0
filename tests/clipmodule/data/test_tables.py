"""Training on local files: a CSV/TSV of image paths and captions, or a folder of image + .txt pairs."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from clipmodule.data.datamodule import ShardDataModule, sum_counters
from clipmodule.data.synthetic import render_sample
from clipmodule.errors import ClipModuleError

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

ROWS = 20


def write_pairs(root: Path, rows: int = ROWS) -> list[tuple[str, str]]:
    """`rows` rendered images under root/images/ with their captions: (relative path, caption)."""
    (root / "images").mkdir(parents=True)
    pairs = []
    for number in range(rows):
        image, caption, _ = render_sample(number, 16)
        relative = f"images/{number:03d}.{'png' if number % 2 else 'jpg'}"
        image.save(root / relative)
        pairs.append((relative, caption))
    return pairs


def write_csv(path: Path, pairs: list[tuple[str, str]], header=("filepath", "title"), separator=",") -> Path:
    lines = [separator.join(header)] + [f'{image}{separator}"{caption}"' for image, caption in pairs]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def broken_csv(tmp_path) -> tuple[Path, set[str]]:
    """A CSV (open_clip's column names) with three bad rows: a missing image, a broken image, an empty caption."""
    pairs = write_pairs(tmp_path)
    (tmp_path / "images" / "004.jpg").write_bytes(b"not an image at all")
    pairs[2] = ("images/missing.jpg", pairs[2][1])
    pairs[7] = (pairs[7][0], "")
    return write_csv(tmp_path / "train.csv", pairs), {"train.csv:3:images/missing.jpg", "train.csv:5:images/004.jpg",
                                                       "train.csv:8:images/007.png"}


def _epoch(module: ShardDataModule) -> tuple[list[dict], dict[str, int]]:
    loader = module.train_dataloader()
    iterator = iter(loader)
    batches = list(iterator)
    return batches, sum_counters(iterator.state_dict())


def test_bad_rows_are_skipped_counted_and_named(broken_csv, caplog):
    path, bad = broken_csv
    # 24 samples: more than the 17 good rows, so the whole first pass is read before the second begins
    module = ShardDataModule(train_shards=str(path), batch_size=4, num_workers=0, image_size=16,
                             samples_per_epoch=24, shuffle_buffer=8)
    with caplog.at_level(logging.WARNING, logger="clipmodule.data.datamodule"):
        batches, counts = _epoch(module)
    keys = [key for batch in batches for key in batch["key"]]
    named = {message.split("sample ", 1)[1].split(" (")[0] for message in caplog.messages if "skipping" in message}
    assert bad <= named and not named & set(keys)
    assert counts["corrupt_samples"] == len([m for m in caplog.messages if "skipping" in m]) >= 3
    assert len(set(keys[:17])) == 17  # the first pass: every good row once
    assert any("No such file" in m for m in caplog.messages) and any("empty or missing caption" in m
                                                                     for m in caplog.messages)
    assert all(batch["image"].shape == (4, 3, 16, 16) for batch in batches)


def test_resume_mid_epoch_continues_with_exactly_the_next_row(broken_csv):
    path, _ = broken_csv
    options = dict(train_shards=str(path), batch_size=4, num_workers=2, image_size=16, samples_per_epoch=32,
                   shuffle_buffer=8)
    straight = list(ShardDataModule(**options).train_dataloader())
    interrupted = ShardDataModule(**options).train_dataloader()
    iterator = iter(interrupted)
    for _ in range(3):
        next(iterator)
    resumed = ShardDataModule(**options).train_dataloader()
    resumed.load_state_dict(interrupted.state_dict())
    rest = list(resumed)
    assert [b["key"] for b in rest] == [b["key"] for b in straight[3:]]
    assert all(torch.equal(a["image"], b["image"]) for a, b in zip(rest, straight[3:]))


def test_tsv_with_named_columns_and_a_folder_of_pairs(tmp_path):
    pairs = write_pairs(tmp_path / "tsv")
    path = write_csv(tmp_path / "tsv" / "pairs.tsv", pairs, header=("img", "desc"), separator="\t")
    module = ShardDataModule(train_shards=str(path), csv_image_key="img", csv_caption_key="desc", batch_size=5,
                             num_workers=0, image_size=16)
    batches, counts = _epoch(module)
    assert counts["corrupt_samples"] == 0 and len({k for b in batches for k in b["key"]}) == ROWS
    folder = tmp_path / "folder"
    for number, (image, caption) in enumerate(write_pairs(folder)):
        if number != 3:  # one image without its caption file
            (folder / image).with_suffix(".txt").write_text(caption)
    batches, counts = _epoch(ShardDataModule(train_shards=str(folder), batch_size=5, num_workers=0, image_size=16))
    assert len(module.train_dataset()) == ROWS and counts["corrupt_samples"] >= 1
    assert "folder:4:images/003.png" not in {key for batch in batches for key in batch["key"]}


def test_a_missing_csv_or_wrong_columns_is_one_line_naming_the_file_and_its_columns(tmp_path):
    with pytest.raises(ClipModuleError, match=r"nothere.csv: no such CSV file"):
        ShardDataModule(train_shards=str(tmp_path / "nothere.csv")).train_dataset()
    path = write_csv(tmp_path / "odd.csv", [("a.jpg", "a cat")], header=("picture", "words"))
    with pytest.raises(ClipModuleError, match=r"odd.csv: no image column among its columns \(picture, words\)"):
        ShardDataModule(train_shards=str(path)).train_dataset()
    with pytest.raises(ClipModuleError, match=r"odd.csv: no column 'caption' \(its columns: picture, words\)"):
        ShardDataModule(train_shards=str(path), csv_image_key="picture", csv_caption_key="caption").train_dataset()
    excel = tmp_path / "excel.csv"  # Excel's "CSV UTF-8" starts with a byte-order mark
    excel.write_bytes("\ufeffpath,caption\na.jpg,a cat\n".encode())
    assert len(ShardDataModule(train_shards=str(excel), num_workers=1, batch_size=1).train_dataset()) == 1
    with pytest.raises(ClipModuleError, match=r"empty: no .tar shards and no images"):
        (tmp_path / "empty").mkdir()
        ShardDataModule(train_shards=str(tmp_path / "empty")).train_dataset()


@pytest.mark.timeout(120, method="signal")  # before the fix the FIFO's open blocked for ever
def test_a_fifo_a_device_and_an_oversized_file_are_bad_rows_never_read(tmp_path, caplog):
    import os

    from clipmodule.data.tables import MAX_FILE_BYTES

    pairs = write_pairs(tmp_path, 8)
    os.mkfifo(tmp_path / "images" / "fifo.jpg")
    with open(tmp_path / "images" / "huge.png", "wb") as sparse:  # sparse: no disk used, and never read
        sparse.truncate(MAX_FILE_BYTES + 1)
    pairs += [("images/fifo.jpg", "a fifo"), ("/dev/zero", "a device"), ("images/huge.png", "a huge file")]
    path = write_csv(tmp_path / "train.csv", pairs)
    module = ShardDataModule(train_shards=str(path), batch_size=4, num_workers=0, image_size=16,
                             samples_per_epoch=12, shuffle_buffer=16)  # over the 8 good rows: every row is read
    with caplog.at_level(logging.WARNING, logger="clipmodule.data.datamodule"):
        batches, counts = _epoch(module)
    assert len(batches) == 3 and counts["corrupt_samples"] == 3
    reasons = " ".join(m for m in caplog.messages if "skipping" in m)
    for reason in ("fifo.jpg (not a regular file (a FIFO))", "/dev/zero (not a regular file (a character device))",
                   "huge.png (larger than 357,913,940 bytes"):
        assert reason in reasons, reasons


@pytest.mark.timeout(120, method="signal")
def test_a_fifo_in_a_class_folder_is_skipped_by_the_evaluation_reader(tmp_path):
    import os

    from clipmodule.data.evaluation import FolderEvalDataset
    from clipmodule.transforms import image_transform

    for number, name in enumerate(("cat", "dog")):
        (tmp_path / name).mkdir()
        render_sample(number, 16)[0].save(tmp_path / name / "a.png")
    os.mkfifo(tmp_path / "dog" / "b.png")
    samples = list(FolderEvalDataset(tmp_path, ["cat", "dog"], image_transform(16, train=False)))
    assert [sample["key"] for sample in samples] == ["cat/a.png", "dog/a.png"]


@pytest.mark.timeout(120, method="signal")
def test_eval_csv_naming_a_fifo_or_a_device_is_one_line_not_a_hang(tmp_path):
    import os

    from clipmodule.eval.readers import open_classification
    from clipmodule.transforms import image_transform

    render_sample(0, 16)[0].save(tmp_path / "a.png")
    os.mkfifo(tmp_path / "b.png")
    for bad, kind in (("b.png", "a FIFO"), ("/dev/zero", "a character device")):
        (tmp_path / "test.csv").write_text(f"path,label\na.png,cat\n{bad},dog\n")
        dataset = open_classification(str(tmp_path / "test.csv"), image_transform(16, train=False))
        assert dataset[0][1] == 0
        with pytest.raises(ClipModuleError, match=rf"{bad}: unreadable image \(not a regular file \({kind}\)\)"):
            dataset[1]
