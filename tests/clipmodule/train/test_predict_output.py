"""`clipmodule predict` owns its output folder: it refuses one that holds anything (an earlier run's parts would
be read with its own), replaces an earlier run's embeddings only when told to, locks the folder while it writes
and marks it one finished set (`embeddings.json`) when every rank is done."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from clipformats.embeddings import SET_FILE, parts, read_embeddings, set_info, written_parts
from clipformats.locks import OutputLock
from clipmodule.cli import main
from clipmodule.data.synthetic import write_synthetic_shards
from clipmodule.errors import ClipModuleError
from clipmodule.train.embeddings import EmbeddingWriter

REPO = Path(__file__).resolve().parents[3]
TINY = ["-c", str(REPO / "experiments" / "base.yaml"), "-c", str(REPO / "experiments" / "tiny_cpu.yaml")]


def predict(tmp_path: Path, out: Path, *options: str) -> int:
    return main(["predict", *TINY, "--data.val_shards", str(tmp_path / "val"), "--data.batch_size", "8",
                 "--data.num_workers", "0", "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
                 "--prediction_writer.output_dir", str(out), *options])


def test_a_second_predict_into_the_folder_is_refused_and_overwrite_replaces_it_whole(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    write_synthetic_shards(tmp_path / "val", 2, 20, image_size=32)
    out = tmp_path / "emb"
    assert predict(tmp_path, out, "--prediction_writer.batches_per_file", "1") == 0  # 5 batches: 5 parts
    first = {path.name: path.read_bytes() for path in sorted((out / "img_emb").iterdir())}
    record = set_info(out)
    assert sorted(record["parts"]) == parts(out) and len(record["parts"]) == 5
    assert record["model"]["world_size"] == 1 and read_embeddings(out)[1].shape[0] == 40
    assert not (tmp_path / "emb.lock").exists()  # released at the end

    capsys.readouterr()
    assert predict(tmp_path, out, "--prediction_writer.batches_per_file", "3") == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "output folder is not empty" in error and "overwrite" in error
    assert {path.name: path.read_bytes() for path in sorted((out / "img_emb").iterdir())} == first

    # overwrite: 2 parts of 3 batches, and none of the first run's 5 left beside them
    assert predict(tmp_path, out, "--prediction_writer.batches_per_file", "3",
                   "--prediction_writer.overwrite", "true") == 0
    assert parts(out) == ["0000_00000", "0000_00001"] == sorted(set_info(out)["parts"])
    metadata, vectors = read_embeddings(out)
    assert vectors.shape[0] == 40 and len(set(metadata["key"].to_pylist())) == 40


class _Strategy:
    def broadcast(self, value, src=0):
        return value

    def barrier(self, name=None):
        pass


class _Trainer:
    global_rank, world_size, ckpt_path, strategy = 0, 1, None, _Strategy()

    def __init__(self, root: Path):
        self.default_root_dir = str(root)


def write_one_batch(writer: EmbeddingWriter, trainer: _Trainer) -> None:
    writer.setup(trainer, None, "predict")
    features = torch.nn.functional.normalize(torch.randn(3, 4), dim=-1)
    writer.write_on_batch_end(trainer, None, {"key": ["s.tar/a", "s.tar/b", "s.tar/c"], "image_features": features,
                                              "text_features": features}, None, None, 0)
    writer.on_predict_epoch_end(trainer, None)
    writer.on_predict_end(trainer, None)


def test_overwrite_refuses_a_folder_holding_anything_an_embedding_writer_did_not_make(tmp_path):
    out = tmp_path / "emb"
    write_one_batch(EmbeddingWriter(str(out)), _Trainer(tmp_path))
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ClipModuleError, match=r"holds notes\.txt, which no embedding writer made"):
        EmbeddingWriter(str(out), overwrite=True).setup(_Trainer(tmp_path), None, "predict")
    assert (out / "notes.txt").read_text() == "mine" and parts(out) == ["0000_00000"] and (out / SET_FILE).exists()
    assert not (tmp_path / "emb.lock").exists()


def test_a_folder_another_run_is_writing_is_refused_naming_the_holder(tmp_path):
    out = tmp_path / "emb"
    with OutputLock(tmp_path / "emb.lock", "clipmodule predict"), \
            pytest.raises(ClipModuleError, match=r"emb: in use by `clipmodule predict` \(pid \d+"):
        EmbeddingWriter(str(out)).setup(_Trainer(tmp_path), None, "predict")
    write_one_batch(EmbeddingWriter(str(out)), _Trainer(tmp_path))  # once the holder is gone, it is free


def test_the_folder_is_locked_and_unfinished_while_parts_are_written(tmp_path):
    out = tmp_path / "emb"
    writer, trainer = EmbeddingWriter(str(out), batches_per_file=1), _Trainer(tmp_path)
    writer.setup(trainer, None, "predict")
    features = torch.nn.functional.normalize(torch.randn(2, 4), dim=-1)
    writer.write_on_batch_end(trainer, None, {"key": ["s.tar/a", "s.tar/b"], "image_features": features,
                                              "text_features": features}, None, None, 0)
    assert written_parts(out) == ["0000_00000"] and not (out / SET_FILE).exists()
    with pytest.raises(ClipModuleError, match="in use by"):
        EmbeddingWriter(str(out), overwrite=True).setup(_Trainer(tmp_path), None, "predict")
    writer.on_exception(trainer, None, RuntimeError("killed"))  # a failed run unlocks and stays unfinished
    assert not (tmp_path / "emb.lock").exists() and not (out / SET_FILE).exists()
    assert np.load(out / "img_emb" / "img_emb_0000_00000.npy").shape == (2, 4)


def test_a_predict_without_a_sample_is_finished_and_empty(tmp_path):
    writer, trainer = EmbeddingWriter(str(tmp_path / "emb")), _Trainer(tmp_path)
    writer.setup(trainer, None, "predict")
    writer.on_predict_epoch_end(trainer, None)
    writer.on_predict_end(trainer, None)
    assert set_info(tmp_path / "emb")["parts"] == {}
