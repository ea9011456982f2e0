"""Zero-shot classification equals a brute-force reference computed here, one prompt and one image at a time."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from clipmodule.classifiers.inference import inference_model
from clipmodule.classifiers.zoo import ZeroShotClassifier, build_zeroshot_model
from clipmodule.errors import ClipModuleError
from clipmodule.eval.prompts import read_templates
from clipmodule.eval.readers import LabelledImages
from clipmodule.eval.readers.builtin import builtin_classification
from clipmodule.eval.tasks import LoaderOptions, zeroshot_classification
from clipmodule.models import create_model
from clipmodule.tokenizer import tokenize
from clipmodule.transforms import image_transform

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return create_model("tiny-vit").eval()


def _every_third(dataset: LabelledImages, count: int) -> LabelledImages:
    return LabelledImages(dataset.items[::3][:count], dataset.classnames, dataset.transform, dataset.name)


@torch.no_grad()
def brute_force(model, dataset, classnames, templates) -> dict[str, float]:
    """The paper's recipe spelled out: one text and one image per forward pass, plain Python ranking."""
    class_vectors = []
    for name in classnames:
        embeddings = []
        for template in templates:
            embedding = model.encode_text(tokenize([template.format(name)]))[0]
            embeddings.append(embedding / embedding.norm())
        mean = torch.stack(embeddings).mean(dim=0)
        class_vectors.append(mean / mean.norm())
    hits1 = hits5 = 0
    per_class = {}
    for index in range(len(dataset)):
        image, label = dataset[index]
        feature = model.encode_image(image[None])[0]
        feature = feature / feature.norm()
        scores = [100.0 * float(feature @ vector) for vector in class_vectors]
        order = sorted(range(len(scores)), key=lambda c: -scores[c])
        hits1 += order[0] == label
        hits5 += label in order[:5]
        seen, right = per_class.get(label, (0, 0))
        per_class[label] = (seen + 1, right + (order[0] == label))
    n = len(dataset)
    recall = np.mean([right / seen for seen, right in per_class.values()])
    return {"top1": hits1 / n, "top5": hits5 / n, "mean_per_class_recall": float(recall)}


def test_digits_zero_shot_equals_brute_force(model):
    dataset = _every_third(builtin_classification("builtin:digits:test", image_transform(32)), 150)
    templates = ['a photo of the number: "{}".', "a drawing of the digit {}."]
    metrics = zeroshot_classification(model, dataset, dataset.classnames, templates, LoaderOptions(batch_size=32))
    reference = brute_force(model, dataset, dataset.classnames, templates)
    assert metrics["num_samples"] == 150
    for key, value in reference.items():
        assert metrics[key] == pytest.approx(value, abs=1e-6), key
    assert 0.0 < metrics["top5"] < 1.0 and metrics["top1"] != metrics["mean_per_class_recall"]  # not a degenerate case


def test_shapes_zero_shot_with_the_80_imagenet_templates(model):
    dataset = _every_third(builtin_classification("builtin:shapes", image_transform(32)), 40)
    templates = read_templates("imagenet")
    metrics = zeroshot_classification(model, dataset, dataset.classnames, templates)
    reference = brute_force(model, dataset, dataset.classnames, templates)
    assert "top5" not in metrics  # 4 classes: top-5 would be trivially 1
    assert metrics["top1"] == pytest.approx(reference["top1"], abs=1e-6)
    assert metrics["mean_per_class_recall"] == pytest.approx(reference["mean_per_class_recall"], abs=1e-6)


def test_zero_shot_classifier_through_inference_model(model):
    classnames, templates = ["cat", "rocket", "cup of coffee"], ["a photo of a {}.", "a picture of a {}."]
    zero_shot = build_zeroshot_model(model, classnames, templates)
    assert isinstance(zero_shot, ZeroShotClassifier) and zero_shot.class_embeddings.shape == (64, 3)
    from skimage import data

    images = [data.chelsea(), data.rocket()]
    results = inference_model(zero_shot, images, device="cpu")
    preprocess = image_transform(32)
    with torch.no_grad():
        for image, result in zip(images, results):
            feature = model.encode_image(preprocess(Image.fromarray(image))[None], normalize=True)[0]
            scores = torch.stack([100 * feature @ zero_shot.class_embeddings[:, c] for c in range(3)])
            assert result["pred_label"] == int(scores.argmax())
            assert result["pred_class"] == classnames[result["pred_label"]]
            np.testing.assert_allclose(result["pred_scores"], scores.softmax(0).numpy(), atol=1e-5)
            assert result["pred_score"] == pytest.approx(float(result["pred_scores"].max()))
    single = inference_model(model, images[0], classnames=classnames, templates=templates, device="cpu")
    assert single["pred_label"] == results[0]["pred_label"]
    feats = zero_shot.extract_feat(torch.zeros(2, 3, 32, 32))
    assert isinstance(feats, tuple) and feats[0].shape == (2, 64)
    assert torch.allclose(feats[0].norm(dim=-1), torch.ones(2))


def test_a_zero_shot_classifier_preprocesses_as_its_clip_was_trained():
    """A CLIP loaded with SigLIP-like stats (mean 0.5, std 0.5, squash): inference_model feeds it its own transform,
    not OpenAI's."""
    from clipmodule.checkpoints.preprocess import Preprocess

    torch.manual_seed(0)
    clip = create_model("tiny-vit").eval()
    clip.preprocess_cfg = own = Preprocess(32, mean=(0.5,) * 3, std=(0.5,) * 3, resize_mode="squash")
    classnames = ["cat", "rocket", "cup of coffee"]
    zero_shot = build_zeroshot_model(clip, classnames, ["a photo of a {}."])
    assert zero_shot.preprocess == own
    image = np.random.default_rng(0).integers(0, 256, (40, 56, 3), dtype=np.uint8)
    result = inference_model(zero_shot, image, device="cpu")
    with torch.no_grad():
        expected = zero_shot(own.transform()(Image.fromarray(image))[None])[0].softmax(0)
        openai = zero_shot(image_transform(32)(Image.fromarray(image))[None])[0].softmax(0)
    np.testing.assert_allclose(result["pred_scores"], expected.numpy(), atol=1e-5)
    assert not np.allclose(result["pred_scores"], openai.numpy(), atol=1e-5)


@pytest.mark.parametrize("classnames, named", [
    ("cat", "classnames must be a list of str, not one str 'cat'"),
    (["cat", None], r"classnames\[1\] is of type NoneType"),
    (["cat", ""], r"classnames\[1\] is empty"),
])
def test_class_names_that_are_not_a_list_of_str_are_refused(model, classnames, named):
    image = np.zeros((32, 32, 3), np.uint8)
    with pytest.raises(ClipModuleError, match=named):
        inference_model(model, image, classnames=classnames, templates=["a {}"], device="cpu")
    with pytest.raises(ClipModuleError, match=named):
        build_zeroshot_model(model, classnames, ["a {}"])


def test_zero_shot_of_a_model_reading_24_tokens_uses_its_context_length():
    torch.manual_seed(0)
    short = create_model("tiny-vit", context_length=24).eval()  # the demo's text context
    result = inference_model(short, np.zeros((32, 32, 3), np.uint8), classnames=["cat", "dog"],
                             templates=["a photo of a {}."], device="cpu")
    assert result["pred_class"] in ("cat", "dog") and result["pred_scores"].shape == (2,)


@pytest.mark.parametrize("template, problem", [
    ("a {} next to a {}.", "has 2 slots for the class name"),
    ("a photo.", "has no slot for the class name"),
    ("a {0} photo.", "has a field {0} other than {} or {c}"),
    ("a {name}.", "has a field {name} other than"),
    ("a {} photo }", "is malformed"),
])
def test_a_template_without_exactly_one_slot_is_one_line_naming_it(model, tmp_path, template, problem):
    path = tmp_path / "templates.txt"
    path.write_text(f"a photo of a {{}}.\n{template}\n")
    with pytest.raises(ClipModuleError) as error:
        read_templates(str(path))
    message = str(error.value)
    assert message.startswith(f"{path}: template {template!r}") and problem in message and "\n" not in message
    with pytest.raises(ClipModuleError, match="templates: template"):
        build_zeroshot_model(model, ["cat"], [template])


def test_c_slot_equals_empty_slot_and_class_prompts_are_embedded_as_written(model, tmp_path):
    classnames = ["cat", "rocket"]
    plain = build_zeroshot_model(model, classnames, ["a photo of a {}.", "art of the {}."]).class_embeddings
    named = build_zeroshot_model(model, classnames, ["a photo of a {c}.", "art of the {c}."]).class_embeddings
    assert torch.equal(plain, named)
    cupl = {"cat": ["a small furry pet that purrs", "a {} sleeping on a sofa"], "rocket": ["a rocket lifting off"],
            "unused": ["ignored"]}
    path = tmp_path / "cupl.json"
    path.write_text(json.dumps(cupl))
    assert read_templates(str(path)) == cupl
    weights = build_zeroshot_model(model, classnames, str(path)).class_embeddings
    with torch.no_grad():  # by hand: each class's own prompts, normalised, averaged, normalised again
        for column, texts in enumerate([["a small furry pet that purrs", "a cat sleeping on a sofa"],
                                        ["a rocket lifting off"]]):
            embedded = model.encode_text(tokenize(texts), normalize=True).mean(dim=0)
            torch.testing.assert_close(weights[:, column], embedded / embedded.norm(), atol=1e-6, rtol=0)
    with pytest.raises(ClipModuleError, match=r"cupl.json: no prompts for class 'dog'"):
        build_zeroshot_model(model, ["cat", "dog"], str(path))
    path.write_text(json.dumps({"cat": []}))
    with pytest.raises(ClipModuleError, match="class 'cat' has no prompts"):
        read_templates(str(path))
    path.write_text("{not json")
    with pytest.raises(ClipModuleError, match="cupl.json: unreadable JSON template file"):
        read_templates(str(path))
