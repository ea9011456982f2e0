"""Zero-shot metrics equal CLIP_benchmark's: its metric code on the same logits and labels, and its whole
`evaluate` (classifier, loop, metrics) on the same model and images. Skipped where clip_benchmark is not
installed (the dev extra installs it)."""

from __future__ import annotations

import pytest
import torch

from clipmodule.eval.metrics import classification_metrics
from clipmodule.eval.options import LoaderOptions
from clipmodule.eval.readers import LabelledImages
from clipmodule.eval.readers.builtin import render_shapes
from clipmodule.eval.tasks import model_tokenizer, zeroshot_classification
from clipmodule.models import create_model

zs = pytest.importorskip("clip_benchmark.metrics.zeroshot_classification")
pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def accuracy_numpy2(output: torch.Tensor, target: torch.Tensor, topk=(1,)) -> list[float]:
    """CLIP_benchmark's `accuracy` with its one numpy-2 fix: `float()` of a 1-element array is an error in
    numpy 2, so the count is taken with `.item()`; the arithmetic is unchanged."""
    pred = output.topk(max(topk), 1, True, True)[1].t()
    correct = pred.eq(target.view(1, -1).expand_as(pred))
    return [correct[:k].reshape(-1).float().sum(0, keepdim=True).item() / len(target) for k in topk]


def test_metrics_equal_clip_benchmarks_on_the_same_logits():
    from sklearn.metrics import balanced_accuracy_score

    generator = torch.Generator().manual_seed(0)
    for classes, samples in ((10, 500), (37, 300), (3, 100)):
        logits = torch.randn(samples, classes, generator=generator)
        labels = torch.randint(0, classes, (samples,), generator=generator)
        labels[:5] = 0  # every run has class 0; some small ones lack others (mean recall is over present ones)
        ours = classification_metrics(logits, labels, classes)
        top1, top5 = accuracy_numpy2(logits, labels, topk=(1, min(5, classes)))
        assert ours["top1"] == pytest.approx(top1, abs=1e-6)
        if classes > 5:
            assert ours["top5"] == pytest.approx(top5, abs=1e-6)
        recall = balanced_accuracy_score(labels.numpy(), logits.argmax(dim=1).numpy())
        assert ours["mean_per_class_recall"] == pytest.approx(recall, abs=1e-6)


def test_zeroshot_equals_clip_benchmarks_evaluate_on_the_same_model_and_images(monkeypatch):
    torch.manual_seed(0)
    model = create_model("tiny-vit").eval()
    images, labels, _ = render_shapes(per_class=8)
    size = model.config.vision.image_size
    from torchvision import transforms

    preprocess = transforms.Compose([transforms.Resize(size), transforms.CenterCrop(size), transforms.ToTensor()])
    names = ["circle", "square", "triangle", "cross"]
    dataset = LabelledImages(list(zip(images, labels)), names, preprocess, "shapes")
    dataset.classes = names  # CLIP_benchmark reads the class list from its dataset
    templates = ["a photo of a {c}.", "a drawing of a {c}."]
    ours = zeroshot_classification(model, dataset, names, templates)
    monkeypatch.setattr(zs, "accuracy", accuracy_numpy2)
    loader = torch.utils.data.DataLoader(dataset, batch_size=16)
    theirs = zs.evaluate(model, loader, model_tokenizer(model), names, templates, "cpu", amp=False)
    assert ours["top1"] == pytest.approx(theirs["acc1"], abs=1e-6)
    assert ours["mean_per_class_recall"] == pytest.approx(theirs["mean_per_class_recall"], abs=1e-6)
    # the scores behind them, not only the summary: their classifier and loop against ours
    from clipmodule.eval.classifier import build_zeroshot_classifier, zeroshot_logits
    from clipmodule.eval.tasks import extract_features

    classifier = zs.zero_shot_classifier(model, model_tokenizer(model), names, templates, "cpu", amp=False)
    their_logits, their_labels = zs.run_classification(model, classifier, loader, "cpu", amp=False)
    features, our_labels = extract_features(model.encode_image, dataset, LoaderOptions(device="cpu"))
    our_logits = zeroshot_logits(features, build_zeroshot_classifier(model, model_tokenizer(model), names, templates))
    assert our_labels == their_labels.tolist()
    torch.testing.assert_close(our_logits, their_logits, atol=1e-4, rtol=1e-5)
    assert our_logits.argmax(dim=1).unique().numel() > 1  # the model does not answer one class for everything
