"""Retrieval recall on a hand-checked case, the C sweep, and a linear probe far above chance."""

from __future__ import annotations

import math

import pytest
import torch

from clipmodule.eval.builtin import builtin_classification, builtin_retrieval
from clipmodule.eval.datasets import LabelledImages
from clipmodule.eval.metrics import classification_metrics
from clipmodule.eval.tasks import (
    LinearProbeOptions,
    LoaderOptions,
    linear_probe,
    retrieval,
    retrieval_metrics,
    sweep_c,
)
from clipmodule.models import create_model
from clipmodule.transforms import image_transform


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# Three images (unit axes) and five captions; captions 0, 1 belong to image 0, caption 2 to image 1,
# captions 3, 4 to image 2. Cosine similarities, worked out by hand:
#              t0     t1     t2     t3     t4
#   image 0   .981   0      .640   0      .949    best t0 (own)            -> hit at 1
#   image 1   .196   .995   .768   .100   0       t1, then t2 (own)        -> hit at 2
#   image 2   0      .100   0      .995   .316    best t3 (own)            -> hit at 1
# Captions ranking images: t0 -> i0 (own, 1st); t1 -> i1, i2, i0 (own 3rd); t2 -> i1 (own, 1st);
# t3 -> i2 (own, 1st); t4 -> i0, i2 (own 2nd).
IMAGES = torch.eye(3)
TEXTS = torch.tensor([[1.0, 0.2, 0.0], [0.0, 1.0, 0.1], [0.5, 0.6, 0.0], [0.0, 0.1, 1.0], [0.9, 0.0, 0.3]])
OWNERS = [0, 0, 1, 2, 2]


@pytest.mark.parametrize("chunk", [1024, 2])
def test_retrieval_recall_hand_checked(chunk):
    metrics = retrieval_metrics(IMAGES, TEXTS, OWNERS, ks=(1, 2, 5), chunk=chunk)
    expected = {"image_to_text_R@1": 2 / 3, "image_to_text_R@2": 1.0, "image_to_text_R@5": 1.0,
                "text_to_image_R@1": 3 / 5, "text_to_image_R@2": 4 / 5, "text_to_image_R@5": 1.0}
    assert metrics == pytest.approx(expected, abs=1e-6)


def test_retrieval_of_a_model_on_the_skimage_photographs():
    torch.manual_seed(0)
    model = create_model("tiny-vit").eval()
    dataset = builtin_retrieval("builtin:skimage", image_transform(32))
    metrics = retrieval(model, dataset, ks=(1, 5, 34), options=LoaderOptions(batch_size=8))
    assert metrics["num_images"] == 17 and metrics["num_captions"] == 34
    assert metrics["image_to_text_R@34"] == 1.0 and metrics["text_to_image_R@34"] == 1.0  # everything is in the top 34
    assert 0.0 <= metrics["image_to_text_R@1"] <= metrics["image_to_text_R@5"] <= 1.0


def test_classification_metrics_mean_recall_counts_only_present_classes():
    scores = torch.tensor([[0.9, 0.1, 0.0, 0.0], [0.1, 0.9, 0.0, 0.0], [0.8, 0.2, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
    labels = torch.tensor([0, 1, 1, 0])  # class 2 absent; class 3 predicted but absent
    metrics = classification_metrics(scores, labels, 4)
    assert metrics["top1"] == pytest.approx(0.5)
    assert metrics["mean_per_class_recall"] == pytest.approx((1 / 2 + 1 / 2) / 2)


def test_sweep_refines_to_eight_steps_per_decade():
    calls = []

    def score(c: float) -> float:
        calls.append(c)
        return -(math.log10(c) - 1.3) ** 2

    best, history = sweep_c(score, LinearProbeOptions())
    assert best == pytest.approx(10**1.25)  # the grid point nearest 10^1.3 at 1/8-decade resolution
    assert len(calls) == len(set(calls)) == 7 + 2 * 4  # coarse grid, then two new points per halving
    assert min(history) == pytest.approx(1e-6) and max(history) == pytest.approx(1e6)


def test_linear_probe_on_digits_beats_chance_by_far():
    torch.manual_seed(0)
    model = create_model("tiny-vit").eval()  # random weights: a fixed random-feature extractor
    transform = image_transform(32)
    train = builtin_classification("builtin:digits:train", transform)
    test = builtin_classification("builtin:digits:test", transform)
    train = LabelledImages(train.items[:500], train.classnames, transform, train.name)
    test = LabelledImages(test.items[:300], test.classnames, transform, test.name)
    options = LinearProbeOptions(log10_c_range=(-2.0, 4.0), steps_per_decade=2, max_iter=300, threads=1)
    metrics = linear_probe(model, train, test, 10, options, LoaderOptions(batch_size=100))
    assert metrics["top1"] > 0.6, metrics  # chance is 0.1
    assert metrics["mean_per_class_recall"] > 0.6 and metrics["num_train"] == 500 and metrics["num_samples"] == 300
    assert f"{metrics['best_C']:.6g}" in metrics["sweep"]
    assert metrics["val_accuracy"] == max(metrics["sweep"].values())  # the search never trades down
