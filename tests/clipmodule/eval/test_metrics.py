"""The one recall@k: several captions per image, ties counted against the query, the keys each caller reports."""

from __future__ import annotations

import pytest
import torch

from clipmodule.eval.metrics import PairedEmbeddings, recall_at_k, retrieval_recall
from clipmodule.eval.tasks import retrieval_metrics


def test_equal_scores_are_not_hits():
    features = torch.ones(4, 8)  # every image scores every caption the same
    recalls = retrieval_recall(features, features, ks=(1, 3, 4))
    for direction in ("image_to_text", "text_to_image"):
        # the own caption ties with the 3 others: rank 3, so only k = 4 finds it
        assert recalls[direction] == {1: 0.0, 3: 0.0, 4: 1.0}


def test_a_tie_with_a_wrong_item_loses_but_a_tie_between_matches_does_not():
    queries = torch.tensor([[1.0, 0.0]])
    items = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    # items 0 and 1 both belong to the query: tied with each other, ahead of item 2 -> hit at 1
    assert recall_at_k(queries, items, torch.tensor([0]), torch.tensor([0, 0, 1]), ks=(1,)) == {1: 1.0}
    # only item 1 belongs to it, tied with the wrong item 0 -> rank 1, a miss at 1, a hit at 2
    assert recall_at_k(queries, items, torch.tensor([0]), torch.tensor([5, 0, 1]), ks=(1, 2)) == {1: 0.0, 2: 1.0}


def test_a_query_without_a_match_is_a_miss():
    images, texts = torch.eye(2), torch.eye(2)
    recalls = retrieval_recall(images, texts, text_to_image=[0, 0], ks=(1, 2))  # image 1 has no caption
    assert recalls["image_to_text"] == {1: 0.5, 2: 0.5}


def test_callers_keep_their_key_names_and_agree():
    torch.manual_seed(0)
    images, texts = torch.randn(12, 6), torch.randn(12, 6)
    metric = PairedEmbeddings(ks=(1, 5))
    metric.update(images[:7], texts[:7])
    metric.update(images[7:], texts[7:])
    logged = metric.compute()  # training logs these under val/
    reported = retrieval_metrics(images, texts, list(range(12)), ks=(1, 5), chunk=5)  # the eval JSON's names
    assert list(logged) == ["image_to_text_R1", "image_to_text_R5", "text_to_image_R1", "text_to_image_R5"]
    assert list(reported) == ["image_to_text_R@1", "image_to_text_R@5", "text_to_image_R@1", "text_to_image_R@5"]
    assert list(logged.values()) == pytest.approx(list(reported.values()))
