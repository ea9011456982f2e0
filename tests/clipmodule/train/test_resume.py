"""Per-rank resume state, and the one-line refusals of a checkpoint that does not fit or holds pickled code."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from clipmodule.errors import ClipModuleError
from clipmodule.train.callbacks import load_checkpoint_safely
from clipmodule.train.module import ClipLitModule, build_network
from clipmodule.train.resume import (
    check_state_fits,
    gather_objects,
    rank_state,
    restore_generators,
    store_rank_states,
    take_rank_state,
)
from tests.conftest import QUIET_WORKER, tree_env

REPO = Path(__file__).resolve().parents[3]
TINY = ["-c", str(REPO / "experiments" / "base.yaml"), "-c", str(REPO / "experiments" / "tiny_cpu.yaml")]
WORKER = Path(__file__).with_name("ddp_resume_worker.py")


def _checkpoint(loader_state: dict) -> dict:
    return {"loops": {"fit_loop": {"state_dict": {"combined_loader": [loader_state]}}}}


def test_every_rank_stores_its_loader_state_and_generator_and_restores_its_own():
    shares = []  # what each of 2 ranks contributes: its own loader position, its own generator
    for rank in range(2):
        torch.manual_seed(rank)
        shares.append(rank_state(_checkpoint({"position": rank}), torch.device("cpu")))
    offered = []
    written = _checkpoint({"position": 0})  # Lightning writes rank 0's copy only
    store_rank_states(written, torch.device("cpu"), 2, gather=lambda item, n: offered.append(item) or shares)
    assert offered[0]["combined_loader"] == [{"position": 0}]
    for rank in range(2):
        loaded = copy.deepcopy(written)
        generators = take_rank_state(loaded, rank, 2, "x.ckpt")
        assert loaded["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [{"position": rank}]
        torch.manual_seed(rank)
        expected = torch.rand(3)
        torch.set_rng_state(generators["cpu_rng"])
        assert torch.equal(torch.rand(3), expected)
    assert gather_objects("mine", 1) == ["mine"]


def test_the_cuda_generator_is_stored_only_for_a_cuda_device():
    assert "cuda_rng" not in rank_state({}, torch.device("cpu"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_the_cuda_generator_travels_with_the_rank_state():
    device = torch.device("cuda", 0)
    torch.cuda.manual_seed(5)
    state = rank_state({}, device)
    expected = torch.rand(3, device=device)  # patch dropout draws like this on a GPU
    torch.cuda.manual_seed(9)
    restore_generators({"cpu_rng": torch.get_rng_state(), "cuda_rng": state["cuda_rng"]}, device)
    assert torch.equal(torch.rand(3, device=device), expected)


def test_resuming_on_another_number_of_ranks_is_refused_but_validating_is_not():
    written = {**_checkpoint({"position": 0}), "rank_states": [{"cpu_rng": torch.get_rng_state()}] * 2}
    with pytest.raises(ClipModuleError, match="x.ckpt was written by 2 ranks and cannot resume on 1"):
        take_rank_state(written, 0, 1, "x.ckpt")
    assert take_rank_state(written, 0, 1, "x.ckpt", fitting=False) is None


def test_a_checkpoint_of_an_earlier_version_restores_its_single_generator():
    state = torch.get_rng_state()
    assert torch.equal(take_rank_state({"rng_state": state}, 1, 2, "old.ckpt")["cpu_rng"], state)
    assert take_rank_state({}, 0, 1, "bare.ckpt") is None


def test_a_state_dict_of_another_architecture_is_one_line_naming_it_and_the_difference():
    model = ClipLitModule(build_network("tiny-vit")).state_dict()
    other = ClipLitModule(build_network("tiny-vit", overrides={"image_size": 64})).state_dict()
    check_state_fits(model, model, "same.ckpt")
    with pytest.raises(ClipModuleError) as error:
        check_state_fits(other, model, "big.ckpt")
    message = str(error.value)
    assert "\n" not in message and "checkpoint big.ckpt is of another architecture" in message
    assert "1 shape mismatches (e.g. model.visual.positional_embedding: checkpoint (65, 128)" in message
    rn = ClipLitModule(build_network("tiny-rn")).state_dict()
    with pytest.raises(ClipModuleError, match="missing .*unexpected"):
        check_state_fits(rn, model, "rn.ckpt")


class Planted:
    """A class a hostile checkpoint pickles: loading must refuse it without running it."""


def test_a_pickled_object_is_refused_with_a_plain_reason(tmp_path):
    path = tmp_path / "pickled.ckpt"
    torch.save({"state_dict": {}, "payload": Planted()}, path)
    with pytest.raises(ClipModuleError) as error:
        load_checkpoint_safely(path)
    message = str(error.value)
    assert message.startswith(f"cannot load checkpoint {path}: it holds a pickled Python object (")
    assert "Planted" in message and "weights_only" not in message and "\n" not in message


def test_fit_from_a_checkpoint_of_another_architecture_is_one_line(tmp_path, monkeypatch, capsys):
    from clipmodule.cli import main
    from clipmodule.data.synthetic import write_synthetic_shards

    write_synthetic_shards(tmp_path / "shards", 2, 8, image_size=32)
    other = ClipLitModule(build_network("tiny-vit", overrides={"text": {"layers": 1}}))
    import lightning

    torch.save({"state_dict": other.state_dict(), "pytorch-lightning_version": lightning.__version__,
                "global_step": 0, "epoch": 0}, tmp_path / "other.ckpt")
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    code = main(["fit", *TINY, "--data.train_shards", str(tmp_path / "shards"), "--data.num_workers", "0",
                 "--data.batch_size", "8", "--trainer.max_steps", "1", "--ckpt_path", str(tmp_path / "other.ckpt")])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("clipmodule fit: error:")]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err[-3000:]
    assert f"checkpoint {tmp_path / 'other.ckpt'} is of another architecture" in lines[0]
    assert "missing (e.g. model.transformer.resblocks.1." in lines[0]


def test_a_config_type_error_keeps_its_reason():
    from clipmodule.train.cli import build_cli

    with pytest.raises(ClipModuleError) as error:
        build_cli([*TINY, "--data.batch_size", "abc"])
    assert str(error.value).endswith('Parser key "data.batch_size": Expected a <class \'int\'>. Got value: abc')


@pytest.mark.slow
def test_two_rank_stop_and_resume_gives_each_rank_its_samples_and_the_unbroken_weights(tmp_path):
    from clipmodule.data.synthetic import write_synthetic_shards

    write_synthetic_shards(tmp_path / "shards", 4, 16, image_size=32)
    env = tree_env(**QUIET_WORKER)
    for name, args in (("straight", []), ("resumed", ["--resume", str(tmp_path / "straight" / "step4.ckpt")])):
        done = subprocess.run([sys.executable, str(WORKER), str(tmp_path / "shards"), str(tmp_path / name), *args],
                              cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
    for rank in range(2):
        straight = torch.load(tmp_path / "straight" / f"rank{rank}.pt", weights_only=True)
        resumed = torch.load(tmp_path / "resumed" / f"rank{rank}.pt", weights_only=True)
        assert len(straight["keys"]) == 8 and resumed["keys"] == straight["keys"][4:], rank
        for name, value in straight["weights"].items():
            assert torch.equal(value, resumed["weights"][name]), f"rank {rank}: {name} differs"
    # within the first epoch (6 steps) the ranks read different samples: a rank replaying another's would not
    first_epoch = [torch.load(tmp_path / "straight" / f"rank{r}.pt", weights_only=True)["keys"][:6] for r in range(2)]
    assert not {k for batch in first_epoch[0] for k in batch} & {k for batch in first_epoch[1] for k in batch}
