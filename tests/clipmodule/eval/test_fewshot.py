"""The few-shot linear probe equals CLIP_benchmark's (`clip_benchmark.metrics.linear_probe.evaluate`, run on CPU
from the same cached features): the same k-shot sample, the same trained layer, the same weight decay from its
sweep, the same metrics; the full-data probe still runs for a row without `fewshot_k`; too few images per class is
one line."""

from __future__ import annotations

import pytest
import torch

from clipmodule.errors import ClipModuleError
from clipmodule.eval.options import LinearProbeOptions, LoaderOptions, SuiteConfig, TaskSpec
from clipmodule.eval.readers import LabelledImages
from clipmodule.eval.readers.builtin import render_shapes
from clipmodule.eval.suite import run_suite
from clipmodule.eval.tasks.fewshot import fewshot_from_features, fewshot_indices, fewshot_probe
from clipmodule.models import create_model
from clipmodule.transforms import image_transform

lp = pytest.importorskip("clip_benchmark.metrics.linear_probe")
pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py
NAMES = ["circle", "square", "triangle", "cross"]


def accuracy_numpy2(output: torch.Tensor, target: torch.Tensor, topk=(1,)) -> list[float]:
    """CLIP_benchmark's `accuracy` with `.item()` for numpy 2's `float()` of an array; arithmetic unchanged."""
    pred = output.topk(max(topk), 1, True, True)[1].t()
    correct = pred.eq(target.view(1, -1).expand_as(pred))
    return [correct[:k].reshape(-1).float().sum(0, keepdim=True).item() / len(target) for k in topk]


@pytest.fixture(scope="module")
def shapes():
    torch.manual_seed(0)
    model = create_model("tiny-vit").eval()
    images, labels, _ = render_shapes(per_class=14)
    preprocess = image_transform(model.config.vision.image_size)
    train = LabelledImages(list(zip(images[::2], labels[::2])), NAMES, preprocess, "shapes-train")
    test = LabelledImages(list(zip(images[1::2], labels[1::2])), NAMES, preprocess, "shapes-test")
    return model, train, test


def _features(model, dataset) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        images = torch.stack([dataset[i][0] for i in range(len(dataset))])
        features = torch.nn.functional.normalize(model.encode_image(images), dim=-1)
    return features, torch.tensor(dataset.labels())


def _clip_benchmark(monkeypatch, tmp_path, train, test, k, seed, val=None) -> dict:
    """CLIP_benchmark's evaluate on features already in its feature cache (so its model is not run), with its
    `.cuda()` calls made no-ops and inference on the CPU."""
    folder = tmp_path / "features" / "m"
    folder.mkdir(parents=True, exist_ok=True)
    for split, (features, labels) in (("train", train), ("test", test), *((("val", val),) if val else ())):
        torch.save(features, folder / f"features_{split}.pt")
        torch.save(labels, folder / f"targets_{split}.pt")
    monkeypatch.setattr(torch.nn.Module, "cuda", lambda self, *args, **kwargs: self)
    monkeypatch.setattr(torch.Tensor, "cuda", lambda self, *args, **kwargs: self)
    monkeypatch.setattr(lp, "accuracy", accuracy_numpy2)
    infer = lp.infer
    monkeypatch.setattr(lp, "infer", lambda model, loader, amp, device: infer(model, loader, amp, "cpu"))
    torch.manual_seed(seed)  # the CLI seeds the global RNG; the k-shot sample is drawn from it
    return lp.evaluate(None, None, None, k, 64, 0, 0.1, 10, "m", seed, str(tmp_path / "features"), "cuda",
                       val_dataloader=object() if val else None, amp=False)


@pytest.mark.filterwarnings("ignore::UserWarning")  # pin_memory and autocast without CUDA
def test_fewshot_probe_equals_clip_benchmarks(shapes, monkeypatch, tmp_path):
    model, train, test = shapes
    for k, seed in ((2, 0), (5, 3)):
        ours = fewshot_probe(model, train, test, 4, k, LinearProbeOptions(seed=seed), LoaderOptions(num_workers=0))
        theirs = _clip_benchmark(monkeypatch, tmp_path, _features(model, train), _features(model, test), k, seed)
        assert ours["top1"] == pytest.approx(theirs["lp_acc1"], abs=1e-6)
        assert ours["mean_per_class_recall"] == pytest.approx(theirs["lp_mean_per_class_recall"], abs=1e-6)
        assert ours["weight_decay"] == theirs["weight_decay"] == 0 and ours["num_train"] == 4 * k
    labels = train.labels()
    torch.manual_seed(7)
    perm = torch.randperm(len(labels)).tolist()  # CLIP_benchmark's sampling, spelled out
    expected = [p for i, p in enumerate(perm) if [labels[q] for q in perm[: i + 1]].count(labels[p]) <= 3]
    assert fewshot_indices(labels, 3, 7) == expected


def _clusters(seed: int, classes: int = 5, per_class: int = 30) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised features of overlapping Gaussian classes: a probe lands well above chance, below 100%."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, 16, generator=torch.Generator().manual_seed(99))
    labels = torch.arange(classes).repeat_interleave(per_class)
    features = centres[labels] + 1.6 * torch.randn(len(labels), 16, generator=generator)
    return torch.nn.functional.normalize(features, dim=-1), labels


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize(("k", "seed", "val"), [(4, 0, None), (10, 2, None), (5, 1, 0.3), (8, 4, 0.25)])
def test_probe_and_weight_decay_sweep_equal_clip_benchmarks(monkeypatch, tmp_path, k, seed, val):
    train, test = _clusters(1), _clusters(2, per_class=20)
    options = LinearProbeOptions(seed=seed, fewshot_val_fraction=val)
    ours = fewshot_from_features(train, test, 5, k, options)
    fit, held_out = train, None
    if val:  # the same held-out share, given to CLIP_benchmark as its validation features
        order = torch.randperm(len(train[1]), generator=torch.Generator().manual_seed(seed))
        cut = len(order) - round(val * len(order))
        fit, held_out = (train[0][order[:cut]], train[1][order[:cut]]), (train[0][order[cut:]], train[1][order[cut:]])
    theirs = _clip_benchmark(monkeypatch, tmp_path, fit, test, k, seed, val=held_out)
    assert ours["weight_decay"] == pytest.approx(theirs["weight_decay"], rel=1e-12)
    assert ours["top1"] == pytest.approx(theirs["lp_acc1"], abs=1e-6)
    assert ours["top1"] > 0.35  # well above chance (0.2): the layers learned
    assert ours["mean_per_class_recall"] == pytest.approx(theirs["lp_mean_per_class_recall"], abs=1e-6)
    if val:
        assert ours["weight_decay"] > 0


def test_rows_with_and_without_k_and_too_few_images(shapes, tmp_path):
    model, train, test = shapes
    for split, dataset in (("train", train), ("test", test)):
        for index, (image, label) in enumerate(dataset.items):
            path = tmp_path / split / NAMES[label] / f"{index}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            image.save(path)
    rows = [TaskSpec("linear-probe", train=str(tmp_path / "train"), test=str(tmp_path / "test"), fewshot_k=k)
            for k in (None, 1, 4)]
    config = SuiteConfig(tasks=rows, loader=LoaderOptions(num_workers=0), probe=LinearProbeOptions(threads=1))
    run = run_suite(model, image_transform(model.config.vision.image_size), config, store=None, say=lambda x: None)
    assert [row["name"].rsplit(":", 1)[-1] for row in run.rows] == [str(tmp_path / "test").rsplit(":", 1)[-1],
                                                                     "1-shot", "4-shot"]
    assert "best_C" in run.rows[0]["metrics"] and run.rows[2]["metrics"]["num_train"] == 16
    assert run.image_passes == 2  # every row reads the same cached features
    with pytest.raises(ClipModuleError, match=r"^shapes-train: class 0 has 7 image\(s\), fewer than fewshot_k=8 "
                                              r"\(4 class\(es\) short\)$"):
        fewshot_probe(model, train, test, 4, 8, loader=LoaderOptions(num_workers=0))


def test_the_commands_take_fewshot_k_and_language():
    from clipmodule.eval.cli import parse_command

    probe = parse_command("linear-probe", ["--model", "m", "--train", "a", "--test", "b", "--fewshot_k", "4",
                                           "--probe.fewshot_val_fraction", "0.2"])
    assert probe.task().fewshot_k == 4 and probe.probe.fewshot_val_fraction == 0.2
    assert probe.task().label() == "linear-probe:b:4-shot"
    zeroshot = parse_command("zeroshot", ["--model", "m", "--dataset", "imagenet1k", "--language", "it"])
    assert zeroshot.task().language == "it"
    with pytest.raises(ClipModuleError, match="fewshot_k must be at least 1, not 0"):
        from clipmodule.eval.suite import preflight

        preflight(TaskSpec("linear-probe", train="a", test="b", fewshot_k=0))
