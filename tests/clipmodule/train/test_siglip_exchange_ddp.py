"""model.siglip_exchange in a real fit: 2 gloo DDP ranks passing the texts round the ring ("shift") train to
the weights of the all-gather, in one piece and as micro-batches (model.accum_freq). (At 2 ranks "bidir"
takes the same single shift, so it is not fitted again.)"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.clipmodule.train.test_accumulate import REPO, _network
from tests.conftest import QUIET_WORKER, tree_env

WORKER = Path(__file__).with_name("siglip_exchange_ddp_worker.py")


@pytest.mark.slow  # 3 two-rank fits: about 25 s idle, more on the loaded shared cores
def test_two_ranks_passing_the_texts_round_train_to_the_all_gathers_weights(tmp_path):
    env = tree_env(**QUIET_WORKER)
    done = subprocess.run([sys.executable, str(WORKER), str(tmp_path), "gather", "shift", "shift@4"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    fits = torch.load(tmp_path / "weights.pt", weights_only=True)
    assert {fit["world_size"] for fit in fits.values()} == {2}
    gathered = fits["gather"]["weights"]
    # fp32, 3 AdamW steps (eps 1e-3, lr 1e-3: test_accumulate's OPTIM): the fits differ only in summation order,
    # 2e-7 at most when measured. A text gradient that missed a rank's share moves weights by ~1e-3 instead.
    for fit in ("shift", "shift@4"):
        for name, value in gathered.items():
            difference = (value - fits[fit]["weights"][name]).abs().max().item()
            assert difference <= 1e-6, f"{fit}: {name} differs by {difference}"
    passed, start = fits["shift"]["weights"], _network("siglip").state_dict()
    for name in ("visual.conv1.weight", "token_embedding.weight", "logit_scale", "logit_bias"):
        assert (passed[name] - start[name]).abs().max() > 1e-3, f"{name} did not train"
