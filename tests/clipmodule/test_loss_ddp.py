"""2 gloo processes with half a batch each, DDP-averaged, equal 1 process on the whole batch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import tree_env

WORKER = Path(__file__).with_name("ddp_loss_worker.py")


def _load_worker():
    import importlib.util

    spec = importlib.util.spec_from_file_location("ddp_loss_worker", WORKER)
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


@pytest.mark.parametrize("variant", ["clip", "clip_local", "siglip"])
def test_two_ranks_equal_one_process_on_the_concatenated_batch(two_rank_results, variant):
    worker = _load_worker()
    images, tokens = worker.make_inputs()
    model = worker.Features(worker.make_model(variant))
    reference = worker.variant_loss(model, images, tokens, variant, rank=0, world_size=1)
    reference.backward()
    ranks = [result[variant] for result in two_rank_results]

    mean_loss = (ranks[0]["loss"] + ranks[1]["loss"]) / 2
    assert torch.allclose(mean_loss, reference.detach(), rtol=0, atol=1e-6)
    for name, parameter in model.clip.named_parameters():
        for rank in ranks:
            diff = (rank["grads"][name] - parameter.grad).abs().max().item()
            assert diff <= 1e-6, f"{variant}: gradient of {name} differs by {diff}"
    # The test is not vacuous: the scale and a tower weight do get a gradient.
    assert model.clip.logit_scale.grad.abs().item() > 0
    assert model.clip.text_projection.grad.abs().max().item() > 1e-4
