"""FSDP: the model has no 0-d parameter (FSDP refuses those) yet its state dict keeps the 0-d logit scale/bias;
weight decay picks the same parameters after FSDP flattened them; a 2-rank FSDP fit equals DDP."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from clipmodule.models import create_model
from clipmodule.train.optim import matrix_names, parameter_groups
from tests.conftest import QUIET_WORKER, tree_env

WORKER = Path(__file__).with_name("fsdp_worker.py")


def test_no_parameter_is_0d_but_the_state_dict_keeps_0d_scale_and_bias():
    model = create_model("tiny-vit", init_logit_bias=-10.0)
    assert all(parameter.ndim > 0 for parameter in model.parameters())  # FSDP's requirement
    state = model.state_dict()
    assert state["logit_scale"].shape == () and state["logit_bias"].shape == ()
    state["logit_scale"], state["logit_bias"] = torch.tensor(3.0), torch.tensor(-5.0)
    other = create_model("tiny-vit", init_logit_bias=0.0)
    other.load_state_dict(state)  # a checkpoint's 0-d values load as before
    assert other.logit_scale.item() == 3.0 and other.logit_bias.item() == -5.0
    assert other.state_dict()["logit_scale"].shape == ()


def test_weight_decay_groups_survive_flattened_parameters():
    model = create_model("tiny-vit", init_logit_bias=-10.0)
    matrices = matrix_names(model)
    expected = {name for name in matrices if "logit_" not in name}
    for module in model.modules():  # what FSDP's sharded views look like: every parameter 1-d
        for name, parameter in list(module.named_parameters(recurse=False)):
            setattr(module, name, nn.Parameter(parameter.detach().flatten()))
    names = {id(p): n for n, p in model.named_parameters()}
    decayed, exempt = parameter_groups(model, 0.2, matrices)
    assert {names[id(p)] for p in decayed["params"]} == expected and expected
    assert {"logit_scale", "logit_bias", "ln_final.weight"} <= {names[id(p)] for p in exempt["params"]}


@pytest.mark.slow
def test_a_two_rank_fsdp_fit_on_cpu_equals_ddp(tmp_path):
    env = tree_env(**QUIET_WORKER)
    for strategy in ("ddp", "fsdp"):
        done = subprocess.run([sys.executable, str(WORKER), strategy, str(tmp_path / strategy)], cwd=tmp_path,
                              env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
    ddp = torch.load(tmp_path / "ddp" / "final.ckpt", weights_only=True)
    fsdp = torch.load(tmp_path / "fsdp" / "final.ckpt", weights_only=True)
    assert ddp["global_step"] == fsdp["global_step"] == 3
    assert sorted(ddp["state_dict"]) == sorted(fsdp["state_dict"])
    assert fsdp["state_dict"]["model.logit_scale"].shape == ()  # the checkpoint key and shape as before
    assert fsdp["state_dict"]["model.logit_bias"].item() != -10.0  # trained
    for key, value in ddp["state_dict"].items():
        assert torch.allclose(value, fsdp["state_dict"][key], atol=1e-6), key
