"""The embedding contract's reader: rows must be unit length, and a folder must be one finished set of parts
(no marker, another run's parts, a part rewritten after the marker: refused in one line)."""

from __future__ import annotations

import numpy as np
import pytest

from clipformats.embeddings import (
    EmbeddingFilesError,
    begin_set,
    finish_set,
    normalise,
    parts,
    read_embeddings,
    write_part,
)
from curation.cli import main


def write(folder, part: str, vectors: np.ndarray, run: str | None = None) -> None:
    keys = [f"{part}{i:04d}" for i in range(len(vectors))]
    write_part(folder, part, vectors, vectors, {"key": keys, "shard": [f"{part}.tar"] * len(keys)},
               info={"run": run} if run else None)


def one_line(error: Exception | str) -> str:
    text = str(error).strip()
    assert len(text.splitlines()) == 1, text
    return text


@pytest.mark.parametrize("scale", [30.0, 0.0])
def test_rows_that_are_not_unit_length_are_refused_by_every_stage(tmp_path, embedded, capsys, scale):
    """600 rows, 103 of them scaled (or all zero): filter, dedup and index refuse the folder in one line naming
    it and how many rows are off, and write nothing."""
    rng = np.random.default_rng(0)
    samples = [embedded.Sample(f"s{i:03d}", rng.normal(size=8), rng.normal(size=8)) for i in range(600)]
    shards, folder = embedded.write(tmp_path, {"00000.tar": samples})
    off = normalise(rng.normal(size=(600, 8)))
    off[:103] *= scale
    write(folder, "00000", off)  # rows as a careless writer leaves them
    finish_set(folder)
    for argv in (["filter", "--shards", str(shards), "--clip_score_threshold", "0.3"],
                 ["dedup", "--shards", str(shards)], ["index"]):
        out = tmp_path / f"out_{argv[0]}"
        assert main([*argv, "--embeddings", str(folder), "--out", str(out)]) == 2
        error = one_line(capsys.readouterr().err)
        assert f"{folder}: 103 of 600 image rows of part 00000 are not unit length" in error, error
        assert not out.exists() or not any(out.iterdir())


def test_index_of_a_set_without_rows_is_one_line(tmp_path, capsys):
    folder = tmp_path / "emb"
    write(folder, "00000", np.zeros((0, 8), np.float32))
    finish_set(folder)
    assert main(["index", "--embeddings", str(folder), "--out", str(tmp_path / "index")]) == 2
    assert "no embeddings to index (1 part(s), all without rows)" in one_line(capsys.readouterr().err)
    assert not (tmp_path / "index").exists() and not (tmp_path / "index.stats.json").exists()


def test_a_folder_is_read_only_as_one_finished_set(tmp_path):
    folder = tmp_path / "emb"
    rows = normalise(np.random.default_rng(0).normal(size=(5, 8)))
    write(folder, "0000_00000", rows, run="first")
    write(folder, "0000_00001", rows, run="first")
    with pytest.raises(EmbeddingFilesError, match="not one finished set of embeddings"):
        parts(folder)  # the writer has not finished (or was killed)
    finish_set(folder, run="first")
    assert parts(folder) == ["0000_00000", "0000_00001"]
    # a second run into the same folder writes fewer parts: the first run's second part must not be read
    begin_set(folder)
    write(folder, "0000_00000", rows[:3], run="second")
    with pytest.raises(EmbeddingFilesError, match="not one finished set"):
        read_embeddings(folder)
    finish_set(folder, run="second")
    with pytest.raises(EmbeddingFilesError) as caught:
        read_embeddings(folder)
    assert "1 part(s) not of the run that finished the set (0000_00001)" in one_line(caught.value)
    (folder / "metadata" / "metadata_0000_00001.parquet").unlink()
    assert len(read_embeddings(folder)[1]) == 3
    write(folder, "0000_00000", rows, run="third")  # rewritten after the set was finished, without begin_set
    with pytest.raises(EmbeddingFilesError, match="part 0000_00000 was rewritten after the set was finished"):
        read_embeddings(folder)
