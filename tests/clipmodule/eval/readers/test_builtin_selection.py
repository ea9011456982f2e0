"""builtin:shape-swaps, the rendered compositional set (a shape on a coloured background, its caption against the
relation-swapped one): scored as CLIP_benchmark scores image-caption selection, from the command too."""

from __future__ import annotations

import json

import pytest
import torch

from clipmodule.checkpoints.io import save_checkpoint
from clipmodule.cli import main as clipmodule
from clipmodule.eval.readers.builtin import builtin_selection, render_shape_swaps
from clipmodule.eval.tasks import model_tokenizer
from clipmodule.eval.tasks.caption_selection import image_caption_selection
from clipmodule.models import create_model
from clipmodule.transforms import image_transform

ics = pytest.importorskip("clip_benchmark.metrics.image_caption_selection")
pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def test_each_item_is_its_caption_and_the_same_words_swapped():
    items = render_shape_swaps()
    assert len(items) == 96
    for _, (caption, swapped) in items:
        assert sorted(caption.split()) == sorted(swapped.split()) and caption != swapped
    assert items[0][1] == ["a circle on a red background", "a red background on a circle"]
    again = render_shape_swaps()
    assert all(a[0].tobytes() == b[0].tobytes() for a, b in zip(items, again))  # the same renders every time


def test_the_replace_sets_have_the_same_renders_and_a_likely_negative():
    swaps = render_shape_swaps()
    for kind, negative in (("shape-replace-shape", "a square on a red background"),
                           ("shape-replace-colour", "a circle on a green background")):
        items = render_shape_swaps(kind=kind)
        assert items[0][1] == ["a circle on a red background", negative]
        assert all(a[0].tobytes() == b[0].tobytes() for a, b in zip(items, swaps))
        assert all(caption != other and len(caption.split()) == len(other.split()) for _, (caption, other) in items)


def test_a_replaced_colour_names_neither_the_background_nor_the_shapes_own_colour():
    """The shape is drawn in the background's complement (blue's is yellow-orange, white's black): the negative's
    colour is far from both colours actually in the image, read from its pixels."""
    from clipmodule.eval.readers.builtin import NAMES_WITHIN, SWAP_BACKGROUNDS

    for image, (caption, negative) in render_shape_swaps(kind="shape-replace-colour"):
        background, named = caption.split()[-2], negative.split()[-2]
        colours = image.getcolors()
        assert named != background and len(colours) == 2  # the background and the shape, nothing else
        for _, rgb in colours:
            assert sum((a - b) ** 2 for a, b in zip(rgb, SWAP_BACKGROUNDS[named])) ** 0.5 > NAMES_WITHIN


def test_the_set_scores_as_clip_benchmark_scores_it_and_runs_from_the_command(tmp_path, capsys):
    from clip_benchmark.datasets.builder import image_captions_collate_fn

    torch.manual_seed(0)
    model = create_model("tiny-vit").eval()
    dataset = builtin_selection("builtin:shape-swaps", image_transform(32))
    ours = image_caption_selection(model, dataset)
    loader = torch.utils.data.DataLoader(dataset, batch_size=16, collate_fn=image_captions_collate_fn)
    theirs = ics.evaluate(model, loader, model_tokenizer(model), device="cpu", amp=False)
    assert ours["num_samples"] == 96
    assert {key: ours[key] for key in ("text_acc", "image_acc", "acc")} == pytest.approx(theirs, abs=1e-6)
    save_checkpoint(model, tmp_path / "tiny.safetensors")
    output = tmp_path / "out.json"
    command = ["eval", "image_caption_selection", "--model", str(tmp_path / "tiny.safetensors"), "--output",
               str(output), "--tracking.uri", "none", "--loader.num_workers", "0"]
    assert clipmodule([*command, "--dataset", "builtin:shape-swaps"]) == 0
    assert json.loads(output.read_text())["metrics"]["text_acc"] == pytest.approx(ours["text_acc"])
    capsys.readouterr()
    assert clipmodule([*command, "--dataset", "builtin:shape-nope"]) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and "builtin:shape-nope: unknown built-in selection dataset (builtin:shape-swaps|" in error
