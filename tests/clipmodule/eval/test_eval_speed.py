"""What makes `eval` fast without changing its numbers: padding cut from prompt batches, classifiers and image
features reused within a suite, loader workers chosen by the data's size."""

from __future__ import annotations

import os

import pytest
import torch
from torchvision import transforms

from clipmodule.api import tokenizer_spec
from clipmodule.eval.classifier import build_zeroshot_classifier
from clipmodule.eval.options import LoaderOptions
from clipmodule.eval.prompts import read_classnames
from clipmodule.eval.readers import LabelledImages
from clipmodule.eval.readers.builtin import render_shapes
from clipmodule.eval.tasks import FeatureCache, model_tokenizer, zeroshot_classification
from clipmodule.models import create_model

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return create_model("tiny-vit").eval()


def test_prompt_batches_lose_their_padding_but_not_their_embeddings(model):
    names, templates = read_classnames("imagenet")[:40], ["a photo of a {}.", "a bad photo of the {}."]
    full = tokenizer_spec(model).build(truncate=True)
    texts = [template.format(name) for name in names for template in templates]
    assert full(texts).shape[1] == 77 and model_tokenizer(model)(texts).shape[1] < 30
    trimmed = build_zeroshot_classifier(model, model_tokenizer(model), names, templates)
    padded = build_zeroshot_classifier(model, full, names, templates)
    torch.testing.assert_close(trimmed, padded, atol=1e-6, rtol=0)


def test_a_classifier_is_built_once_for_datasets_sharing_names_and_templates(model):
    images, labels, _ = render_shapes(per_class=3)
    size = model.config.vision.image_size
    preprocess = transforms.Compose([transforms.Resize(size), transforms.CenterCrop(size), transforms.ToTensor()])
    names = ["circle", "square", "triangle", "cross"]
    first = LabelledImages(list(zip(images, labels)), names, preprocess, "a")
    second = LabelledImages(list(zip(images[::-1], labels[::-1])), names, preprocess, "b")
    cache = FeatureCache()
    results = [zeroshot_classification(model, data, names, ["a {}."], cache=cache) for data in (first, second)]
    assert len(cache.classifiers) == 1
    assert results[0]["top1"] == pytest.approx(results[1]["top1"])  # the same images, reversed
    assert results[1] == pytest.approx(zeroshot_classification(model, second, names, ["a {}."]))


def test_loader_workers_follow_the_data_size_unless_given():
    cores = len(os.sched_getaffinity(0))
    assert LoaderOptions().workers_for(100) == 0  # fewer than 4 batches: workers cost more than they save
    assert LoaderOptions().workers_for(50_000) == min(8, cores)
    assert LoaderOptions().workers_for(None) == min(8, cores)
    assert LoaderOptions(num_workers=3).workers_for(10) == 3
    assert LoaderOptions().batch_size == 256
