"""`make demo` (first version): the `clip` usage example on a skimage photograph, with a random-init model.

The end-to-end demo (curate -> download -> fit -> evaluate -> compare) replaces this once those stages land;
until then this shows the public API working: create a model, preprocess, tokenize, forward, softmax."""

from __future__ import annotations

import sys

import torch
from PIL import Image
from skimage import data as skimage_data

import clipmodule


def main() -> int:
    torch.manual_seed(0)
    model = clipmodule.create_model("ViT-B-32").eval()
    preprocess = clipmodule.image_transform(model.config.vision.image_size)
    image = preprocess(Image.fromarray(skimage_data.chelsea())).unsqueeze(0)
    captions = ["a facial photo of a tabby cat", "a diagram", "a dog", "a rocket standing on a launchpad"]
    text = clipmodule.tokenize(captions)
    with torch.no_grad():
        logits_per_image, _ = model(image, text)
    probs = logits_per_image.softmax(dim=-1)[0]
    print("ViT-B-32 (random weights: no pretrained weights can be downloaded here) on skimage 'chelsea':")
    for caption, prob in zip(captions, probs.tolist()):
        print(f"  {prob:.4f}  {caption}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
