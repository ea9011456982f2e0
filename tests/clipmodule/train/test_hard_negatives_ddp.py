"""model.hard_negatives over 2 gloo ranks: every rank's negatives are gathered as columns of every image's row,
and the DDP-averaged update equals 1 process on the whole batch (absent negatives masked on both)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import tree_env

WORKER = Path(__file__).with_name("hard_negatives_ddp_worker.py")


def _load_worker():
    spec = importlib.util.spec_from_file_location("hard_negatives_ddp_worker", WORKER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def two_rank_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    completed = subprocess.run([sys.executable, str(WORKER), str(out)], env=tree_env(), capture_output=True, text=True,
                               timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(2)]


@pytest.mark.slow  # two processes, four variants in float64: about 20 s on the shared cores
@pytest.mark.parametrize("variant", ["clip", "clip_local", "siglip", "siglip_shift"])
def test_two_ranks_with_hard_negatives_equal_one_process_on_the_whole_batch(two_rank_results, variant):
    worker = _load_worker()
    model = worker.Features(worker.make_model(variant))
    reference = worker.variant_loss(model, worker.make_inputs(), variant, rank=0, world_size=1)
    reference.backward()
    ranks = [result[variant] for result in two_rank_results]
    assert torch.allclose((ranks[0]["loss"] + ranks[1]["loss"]) / 2, reference.detach(), rtol=0, atol=1e-6)
    for name, parameter in model.clip.named_parameters():
        for rank in ranks:
            diff = (rank["grads"][name] - parameter.grad).abs().max().item()
            assert diff <= 1e-6, f"{variant}: gradient of {name} differs by {diff}"
    # not vacuous: the negatives count (the loss without them is lower) and the towers get gradients
    plain = worker.make_inputs()
    plain["negatives_present"][:] = False
    assert reference.detach() > worker.variant_loss(model, plain, variant, rank=0, world_size=1).detach() + 1e-4
    assert model.clip.text_projection.grad.abs().max().item() > 1e-4
