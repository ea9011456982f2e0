"""A plain fit prints no notice that says nothing about the run: Lightning's 14-line manual-optimisation example
at every checkpoint of an accumulated fit, and "Total length of `list` across ranks is zero" without
validation data (both silenced by exact message in `silence_known_notices`)."""

from __future__ import annotations

import warnings

from clipmodule.data.synthetic import write_synthetic_shards
from tests.clipmodule.train.test_cli import TINY

NOTICES = ("Using ModelCheckpoint with manual optimization", "Total length of `list` across ranks is zero")


def test_an_accumulated_fit_without_validation_data_prints_neither_notice(tmp_path, monkeypatch, capsys):
    from clipmodule.cli import main

    write_synthetic_shards(tmp_path / "shards", 1, 16, image_size=32)
    monkeypatch.chdir(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # what a user's terminal shows; the fit adds its filters in front
        code = main(["fit", *TINY, "--data.train_shards", str(tmp_path / "shards"), "--data.num_workers", "1",
                     "--data.batch_size", "8", "--model.accum_freq", "2", "--trainer.max_steps", "2",
                     "--checkpoint.every_n_train_steps", "1", "--trainer.enable_progress_bar", "false"])
    out = capsys.readouterr()
    assert code == 0, out.err[-2000:]
    assert list((tmp_path / "runs").rglob("step00000002.ckpt"))  # checkpoints were written under accumulation
    shown = [str(warning.message) for warning in caught] + [out.out, out.err]
    assert not [text for text in shown for notice in NOTICES if notice in text]
