"""Training's retrieval metric across 2 gloo ranks: every rank gathers all pairs and reports single-process recall."""

from __future__ import annotations

import importlib.util
import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from clipmodule.eval.metrics import PairedEmbeddings, retrieval_recall
from tests.conftest import tree_env

WORKER = Path(__file__).with_name("ddp_metrics_worker.py")


def _worker():
    spec = importlib.util.spec_from_file_location("ddp_metrics_worker", WORKER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow  # two processes importing torch: ~40 s on the shared 2-core machine
def test_two_ranks_gather_every_pair_and_equal_one_process(tmp_path):
    completed = subprocess.run([sys.executable, str(WORKER), str(tmp_path), str(_free_port())],
                               env=tree_env(), capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in range(2)]
    worker = _worker()
    images, texts = worker.make_pairs()
    assert [rank["rows"] for rank in ranks] == [7, 5]
    for rank in ranks:  # all 12 rows, rank 0's first, on both ranks
        assert torch.equal(torch.tensor(rank["gathered"]), images)
    single = PairedEmbeddings(ks=worker.KS)
    single.update(images, texts)
    expected = single.compute()
    assert ranks[0]["recalls"] == ranks[1]["recalls"] == pytest.approx(expected, abs=1e-7)
    # Not vacuous: the cross-rank tie of pairs 3 and 10 costs both a hit at 1 but not at 2.
    by_hand = retrieval_recall(images, texts, ks=(1, 2))["image_to_text"]
    assert expected["image_to_text_R1"] == by_hand[1] < 1.0
    untied = retrieval_recall(images[:10], texts[:10], ks=(1,))["image_to_text"][1]
    assert untied != by_hand[1]
