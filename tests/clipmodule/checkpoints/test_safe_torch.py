"""A file that is not a torch.save file of tensors is one line naming it and what it is, wherever it is loaded
(`load`, `model.init_from`, `--ckpt_path`), and never advice to load it with `weights_only=False`."""

import pickle
from pathlib import Path

import pytest
import torch

import clipmodule
from clipmodule.errors import ClipModuleError
from clipmodule.train.callbacks import load_checkpoint_safely
from clipmodule.train.init import start_from_weights

REPO = Path(__file__).resolve().parents[3]
PLANTED = "planted code ran"


class _Planted:
    def __reduce__(self):
        return (print, (PLANTED,))


def _hostile_files(folder: Path) -> dict[str, Path]:
    """name -> file, each with the words its refusal must hold."""
    (folder / "empty.pt").write_bytes(b"")
    with open(folder / "plain.pt", "wb") as handle:
        pickle.dump({"visual.proj": [1.0]}, handle)
    torch.save({"state_dict": {"w": torch.zeros(1)}, "payload": _Planted()}, folder / "code.pt")
    (folder / "notes.pt").write_text("not weights at all")
    return {"an empty file (0 bytes)": folder / "empty.pt", "a plain Python pickle": folder / "plain.pt",
            "it holds a pickled Python object (print)": folder / "code.pt",
            "not a weights file written by torch.save": folder / "notes.pt"}


def _assert_one_plain_line(message: str, path: Path, reason: str) -> None:
    assert str(path) in message and reason in message and "\n" not in message, message
    assert "weights_only" not in message and "mmap" not in message and "Re-running" not in message, message


def test_load_and_init_from_name_the_file_and_what_it_is(tmp_path, capsys):
    for reason, path in _hostile_files(tmp_path).items():
        for load in (clipmodule.load, start_from_weights):
            with pytest.raises(ClipModuleError) as error:
                load(str(path))
            _assert_one_plain_line(str(error.value), path, reason)
    assert PLANTED not in capsys.readouterr().out


def test_ckpt_path_that_is_not_a_checkpoint_is_one_line(tmp_path, capsys):
    files = _hostile_files(tmp_path)
    for reason, path in files.items():  # what Lightning's resume and the CLI's check call, memory-mapped
        with pytest.raises(ClipModuleError) as error:
            load_checkpoint_safely(path, map_location="cpu", mmap=True)
        _assert_one_plain_line(str(error.value), path, reason)
    legacy = tmp_path / "legacy.ckpt"
    torch.save({"global_step": 1}, legacy, _use_new_zipfile_serialization=False)
    with pytest.raises(ClipModuleError, match="format before PyTorch 1.6, which cannot be memory-mapped"):
        load_checkpoint_safely(legacy, map_location="cpu", mmap=True)
    assert load_checkpoint_safely(legacy)["global_step"] == 1  # readable where it is not memory-mapped

    from clipmodule.cli import main

    tiny = ["-c", str(REPO / "experiments" / "base.yaml"), "-c", str(REPO / "experiments" / "tiny_cpu.yaml")]
    capsys.readouterr()
    code = main(["fit", *tiny, "--data.train_shards", str(tmp_path / "none"), "--trainer.max_steps", "1",
                 "--ckpt_path", str(files["an empty file (0 bytes)"])])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("clipmodule fit: error:")]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err[-2000:]
    _assert_one_plain_line(lines[0], files["an empty file (0 bytes)"], "an empty file (0 bytes)")
    assert PLANTED not in capsys.readouterr().out
