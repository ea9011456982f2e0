"""`clipmodule segment IMAGE --classes a,b,c --model CHECKPOINT`: MaskCLIP zero-shot segmentation, an overlay PNG."""

from __future__ import annotations

from pathlib import Path

from clipmodule.errors import ClipModuleError
from clipmodule.options import new_parser, parse


def _parser():
    parser = new_parser("clipmodule segment", "Label every pixel of an image with one of --classes, training-free "
                        "(MaskCLIP: the CLIP model's dense features against the class prompts), and write an "
                        "overlay PNG.", config=True)
    parser.add_argument("image", help="an image file")
    parser.add_argument("--classes", required=True,
                        help="class names, comma-separated; 'a; b' prompts a class by two names (the better one "
                        "scores), 'label=a; b' also names it 'label' in the legend")
    parser.add_argument("--model", required=True, help="a checkpoint `clipmodule.load` reads, or a model name")
    parser.add_argument("--templates", default="a photo of a {}.",
                        help="prompt templates with one {} for the class name, '|'-separated")
    parser.add_argument("--output", default=None, help="overlay PNG (default: IMAGE's name + _segment.png)")
    parser.add_argument("--short_side", type=int, default=None,
                        help="predict on the image resized to this short side (the overlay keeps the image's size)")
    parser.add_argument("--window", type=int, default=None, help="window size (default: the model's image size)")
    parser.add_argument("--stride", type=int, default=None, help="window stride (default: 2/3 of the window)")
    parser.add_argument("--key_smoothing", type=float, default=None,
                        help="MaskCLIP's key smoothing: patches less sure than this probability re-voted (1.0: all)")
    parser.add_argument("--prompt_denoising", type=float, default=None, help="MaskCLIP's prompt denoising threshold")
    parser.add_argument("--background_threshold", type=float, default=None,
                        help="pixels less sure than this get the first class (the background)")
    parser.add_argument("--vit_path", default="value", choices=["value", "released"],
                        help="a ViT's dense features: the paper's value path, or MaskCLIP's released backbone "
                        "(the last block's residual and MLP kept)")
    parser.add_argument("--device", default="cpu")
    return parser


def _image_tensor(path: str, model, short_side: int | None):
    import torch
    from PIL import Image, UnidentifiedImageError
    from torchvision.transforms import functional as TF

    from clipmodule.checkpoints.io import preprocess_of

    try:
        image = Image.open(path).convert("RGB")
    except (OSError, UnidentifiedImageError) as error:
        raise ClipModuleError(f"{path}: not a readable image ({error.__class__.__name__})") from None
    seen = image if short_side is None else TF.resize(image, short_side, interpolation=TF.InterpolationMode.BICUBIC)
    config = preprocess_of(model)
    tensor = TF.normalize(TF.to_tensor(seen), config.mean, config.std)
    return image, tensor.unsqueeze(0).to(torch.float32)


def main(argv: list[str]) -> int:
    args = parse(_parser(), argv)
    entries = [entry.strip() for entry in args.classes.split(",") if entry.strip()]
    if not entries:
        raise ClipModuleError("--classes: no class names given")
    labels_and_prompts = [entry.partition("=")[::2] if "=" in entry else (entry, entry) for entry in entries]
    legend = [label.strip() for label, _ in labels_and_prompts]
    classnames = [prompts.strip() for _, prompts in labels_and_prompts]
    if not Path(args.image).is_file():
        raise ClipModuleError(f"{args.image}: no such image file")
    import clipmodule
    from clipformats.files import atomic_path
    from clipmodule.dense.overlay import overlay
    from clipmodule.dense.segment import SegmentOptions, segment

    model, _ = clipmodule.load(args.model, device=args.device)
    image, tensor = _image_tensor(args.image, model, args.short_side)
    options = SegmentOptions(key_smoothing=args.key_smoothing, prompt_denoising=args.prompt_denoising,
                             background_threshold=args.background_threshold, window=args.window, stride=args.stride,
                             vit_path=args.vit_path)
    result = segment(model, tensor, classnames, args.templates.split("|"), options=options,
                     output_size=(image.height, image.width))
    labels = result.labels[0].cpu().numpy()
    output = Path(args.output) if args.output else Path(args.image).with_name(Path(args.image).stem + "_segment.png")
    output.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(output) as temporary:
        overlay(image, labels, legend).save(temporary, format="PNG")
    shares = {name: float((labels == index).mean()) for index, name in enumerate(legend)}
    print(f"{args.image} -> {output}: " + ", ".join(f"{name} {share:.0%}" for name, share in shares.items()))
    return 0
