"""Retrieval recall on a hand-checked case, the C sweep, and a linear probe far above chance."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from clipmodule.eval.metrics import classification_metrics
from clipmodule.eval.readers import LabelledImages
from clipmodule.eval.readers.builtin import builtin_classification, builtin_retrieval
from clipmodule.eval.tasks import (
    LinearProbeOptions,
    LoaderOptions,
    linear_probe,
    retrieval,
    retrieval_metrics,
    sweep_c,
)
from clipmodule.models import create_model
from clipmodule.tokenizer import tokenize
from clipmodule.transforms import image_transform

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


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
    reference = brute_force_recall(model, dataset, (1, 5, 34))
    for key, value in reference.items():
        assert metrics[key] == pytest.approx(value, abs=1e-6), key
    assert 0.0 < metrics["image_to_text_R@5"] < 1.0 and 0.0 < metrics["text_to_image_R@5"] < 1.0  # not degenerate


@torch.no_grad()
def brute_force_recall(model, dataset, ks) -> dict[str, float]:
    """Recall@k spelled out: one image or caption per forward pass, Python sorting, wrong items first on ties."""
    images, captions, owners = [], [], []
    for index in range(len(dataset)):
        image, texts = dataset[index]
        feature = model.encode_image(image[None])[0]
        images.append(feature / feature.norm())
        for text in texts:
            embedded = model.encode_text(tokenize([text], context_length=model.context_length))[0]
            captions.append(embedded / embedded.norm())
            owners.append(index)

    def first_match(query, items, matches) -> int:
        order = sorted(range(len(items)), key=lambda j: (-float(query @ items[j]), j in matches))
        return next(position for position, j in enumerate(order) if j in matches)

    to_text = [first_match(q, captions, {j for j, o in enumerate(owners) if o == i}) for i, q in enumerate(images)]
    to_image = [first_match(q, images, {owners[j]}) for j, q in enumerate(captions)]
    return {f"{direction}_R@{k}": sum(position < k for position in positions) / len(positions)
            for direction, positions in (("image_to_text", to_text), ("text_to_image", to_image)) for k in ks}


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


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")  # as the probe does, at max_iter
def test_linear_probe_equals_scikit_learn_on_the_same_split_and_c():
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split

    torch.manual_seed(0)
    model = create_model("tiny-vit").eval()
    transform = image_transform(32)
    train = builtin_classification("builtin:digits:train", transform)
    test = builtin_classification("builtin:digits:test", transform)
    train = LabelledImages(train.items[:200], train.classnames, transform, train.name)
    test = LabelledImages(test.items[:100], test.classnames, transform, test.name)
    options = LinearProbeOptions(log10_c_range=(-2.0, 1.0), steps_per_decade=1, max_iter=1000, threads=1)
    metrics = linear_probe(model, train, test, 10, options, LoaderOptions(batch_size=100))

    def features(dataset):  # by hand, one image at a time: the class token before the projection
        with torch.no_grad():
            rows = [model.visual.forward_features(dataset[i][0][None])[0, 0] for i in range(len(dataset))]
        return torch.stack(rows).numpy(), np.array([dataset[i][1] for i in range(len(dataset))])

    (x, y), (test_x, test_y) = features(train), features(test)
    fit_x, val_x, fit_y, val_y = train_test_split(x, y, test_size=0.2, random_state=0, stratify=y)
    for c, accuracy in metrics["sweep"].items():  # every C the search tried scored as scikit-learn scores it
        reference = LogisticRegression(C=float(c), max_iter=1000).fit(fit_x, fit_y).score(val_x, val_y)
        assert accuracy == pytest.approx(reference, abs=1e-9), c
    final = LogisticRegression(C=metrics["best_C"], max_iter=1000).fit(x, y)  # refit on train + validation
    predictions = final.predict(test_x)
    assert metrics["top1"] == pytest.approx(float((predictions == test_y).mean()), abs=1e-6)  # float32 metric
    recalls = [float((predictions[test_y == k] == k).mean()) for k in np.unique(test_y)]
    assert metrics["mean_per_class_recall"] == pytest.approx(float(np.mean(recalls)), abs=1e-6)
    assert 0.3 < metrics["top1"] < 1.0  # far above chance (0.1), not a degenerate case


def test_coarse_to_fine_search_can_miss_the_best_c_of_the_fine_grid():
    # A narrow peak between coarse grid points: the refinement follows the broad optimum and never sees it.
    def score(c: float) -> float:
        exponent = math.log10(c)
        return 0.9 if abs(exponent + 3.0) < 0.2 else 0.8 - 0.01 * abs(exponent - 2.0)

    best, history = sweep_c(score, LinearProbeOptions())
    assert best == pytest.approx(100.0) and history[best] == pytest.approx(0.8)
    fine_grid = [10.0 ** (e / 8) for e in range(-48, 49)]
    assert max(score(c) for c in fine_grid) == 0.9  # the full 1/8-decade grid would have found C = 1e-3


def test_suite_table_names_the_rows_measured_on_damaged_shards():
    from clipmodule.eval.suite import markdown_table

    rows = [{"name": "clean", "task": "zeroshot", "dataset": "a", "metrics": {"top1": 0.5, "corrupt_shards": 0}},
            {"name": "cut", "task": "zeroshot", "dataset": "b",
             "metrics": {"top1": 0.25, "corrupt_shards": 2, "skipped_samples": 1}}]
    table = markdown_table(rows, "t")
    assert "| cut | zeroshot | b | 25.00 |" in table
    assert table.endswith("- cut: 2 corrupt shard(s), 1 incomplete sample(s) skipped\n") and "- clean" not in table
