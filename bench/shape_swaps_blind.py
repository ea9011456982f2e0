"""builtin:shape-swaps without looking: how often a model picks the unswapped caption when the image is its own render,
a blank one (grey, black), or another item's render. A model that picks it whatever the image has learned which
word order is likely, not what the picture shows (the text prior SugarCrepe warns of).

    python bench/shape_swaps_blind.py demo_out/objectives/runs/student/last.ckpt demo_out/objectives/runs/...
"""

from __future__ import annotations

import sys

import torch
from PIL import Image

import clipmodule
from clipmodule.eval.readers.builtin import render_shape_swaps
from clipmodule.eval.tasks import model_tokenizer


def picks_unswapped(images: torch.Tensor, texts: torch.Tensor) -> float:
    """Share of items whose first caption scores higher against the item's image (features normalised)."""
    return ((images[:, None] * texts).sum(-1).argmax(1) == 0).float().mean().item()


@torch.no_grad()
def blind_scores(checkpoint: str) -> dict[str, float]:
    items = render_shape_swaps()
    model, preprocess = clipmodule.load(checkpoint)
    model.eval()
    captions = [caption for _, pair in items for caption in pair]
    texts = model.encode_text(model_tokenizer(model)(captions), normalize=True).view(len(items), 2, -1)
    own = model.encode_image(torch.stack([preprocess(image) for image, _ in items]), normalize=True)
    scores = {"own image": picks_unswapped(own, texts),
              "another item's image": picks_unswapped(torch.roll(own, len(items) // 3, 0), texts)}
    for name, colour in (("grey image", (128, 128, 128)), ("black image", (0, 0, 0))):
        blank = model.encode_image(preprocess(Image.new("RGB", (64, 64), colour))[None], normalize=True)
        scores[name] = picks_unswapped(blank.expand_as(own), texts)
    return scores


def main(checkpoints: list[str]) -> int:
    for checkpoint in checkpoints:
        scores = ", ".join(f"{name} {value:.1%}" for name, value in blind_scores(checkpoint).items())
        print(f"{checkpoint}: {scores}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
