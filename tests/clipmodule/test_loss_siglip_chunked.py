"""SigLIP with the texts passed round the ranks ("shift", "bidir") gives the all-gather's loss and gradients,
and keeps only this rank's features for the backward pass."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from clipmodule.loss import siglip_loss
from tests.conftest import tree_env

WORKER = Path(__file__).with_name("siglip_chunked_worker.py")


def _worker():
    spec = importlib.util.spec_from_file_location("siglip_chunked_worker", WORKER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(tmp_path: Path, world_size: int) -> list[dict]:
    completed = subprocess.run([sys.executable, str(WORKER), str(tmp_path), str(world_size)], env=tree_env(),
                               capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(world_size)]


def _assert_exchanges_agree(ranks: list[dict], world_size: int) -> None:
    worker = _worker()
    inputs = worker.global_inputs(world_size)
    leaves = {name: value.clone().requires_grad_() for name, value in inputs.items()}
    whole = siglip_loss(leaves["images"], leaves["texts"], leaves["scale"], leaves["bias"])
    whole.backward()
    for exchange in ("gather", "shift", "bidir"):
        mean_loss = sum(rank[exchange]["loss"] for rank in ranks) / world_size
        assert torch.allclose(mean_loss, whole.detach(), rtol=0, atol=1e-12), exchange
        for rank, result in enumerate(ranks):
            gathered = result["gather"]
            for name in ("images", "texts", "scale", "bias"):
                diff = (result[exchange][name] - gathered[name]).abs().max().item()
                assert diff <= 1e-12, f"{exchange}, rank {rank}: gradient of {name} differs by {diff}"
        # each rank's feature gradients are its rows of the one-process gradient; the scale's and bias's
        # the mean over ranks of theirs (as DDP averages them)
        for name in ("images", "texts"):
            stacked = torch.cat([rank[exchange][name] for rank in ranks]) / world_size
            assert torch.allclose(stacked, leaves[name].grad, rtol=0, atol=1e-12), (exchange, name)
        for name in ("scale", "bias"):
            mean = sum(rank[exchange][name] for rank in ranks) / world_size
            assert torch.allclose(mean, leaves[name].grad, rtol=0, atol=1e-12), (exchange, name)
    assert ranks[0]["shift"]["texts"].abs().max() > 1e-3  # not vacuous: the texts do get a gradient
    assert ranks[0]["bidir"]["scale"].abs() > 1e-3


def _assert_the_ring_keeps_only_the_local_features(ranks: list[dict], world_size: int) -> None:
    """What the backward pass holds on to: the ring only this rank's features, scale and bias, however many
    ranks there are; the gather the N_global texts and the N_local x N_global logits, growing with the ranks."""
    worker = _worker()
    local = 2 * worker.ROWS_PER_RANK * worker.WIDTH + 2
    for rank in ranks:
        assert rank["shift"]["saved_elements"] == rank["bidir"]["saved_elements"] == local
        assert rank["gather"]["saved_elements"] >= local + worker.ROWS_PER_RANK * world_size * worker.WIDTH


def test_two_ranks_passing_texts_round_equal_the_all_gather(tmp_path):
    ranks = _run(tmp_path, 2)
    _assert_exchanges_agree(ranks, 2)
    _assert_the_ring_keeps_only_the_local_features(ranks, 2)


def test_four_ranks_both_ways_round_equal_the_all_gather(tmp_path):
    """4 ranks: "bidir" takes one round both ways and one shift; "shift" three rounds."""
    ranks = _run(tmp_path, 4)
    _assert_exchanges_agree(ranks, 4)
    _assert_the_ring_keeps_only_the_local_features(ranks, 4)


def test_one_process_needs_no_exchange_and_an_unknown_one_is_refused():
    images = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
    scale, bias = torch.tensor(10.0), torch.tensor(-3.0)
    assert torch.equal(siglip_loss(images, images, scale, bias, exchange="bidir"),
                       siglip_loss(images, images, scale, bias))
    with pytest.raises(ValueError, match="siglip exchange 'ring' is not one of gather, shift, bidir"):
        siglip_loss(images, images, scale, bias, exchange="ring")
