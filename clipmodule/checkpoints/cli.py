"""`clipmodule convert` and `clipmodule models`."""

from __future__ import annotations

from clipmodule.errors import ClipModuleError
from clipmodule.options import new_parser, parse


def main(argv: list[str]) -> int:
    parser = new_parser(
        "clipmodule convert",
        "Convert a CLIP checkpoint between OpenAI, open_clip (file or hub folder) and Hugging Face layouts. The "
        "architecture is --model, else the config the source carries, else OpenAI's for OpenAI's releases; a bare "
        "state dict that is none of these is refused. Weights are never unpickled as code.",
    )
    parser.add_argument("source", help="checkpoint file (.pt/.bin/.safetensors), open_clip or HF folder, hub cache")
    parser.add_argument("destination", help="output file (.safetensors or .pt), or a folder for --to hf/open_clip")
    parser.add_argument("--to", choices=("openai", "open_clip", "hf"), default="openai", help="output layout")
    parser.add_argument("--model", default=None,
                        help="registered architecture name (see `clipmodule models`) or config .json of the source")
    gelu = parser.add_mutually_exclusive_group()
    gelu.add_argument("--quick_gelu", dest="quick_gelu", action="store_const", const=True, default=None,
                      help="override: the source was trained with QuickGELU (OpenAI's models)")
    gelu.add_argument("--gelu", dest="quick_gelu", action="store_const", const=False,
                      help="override: the source uses exact GELU (open_clip's plain names)")
    parser.add_argument("--merge_lora", action="store_true",
                        help="fold the LoRA adapters of a `fit` with model.lora into plain weights")
    parser.add_argument("--image_size", type=int, default=None,
                        help="write the model at this image size (position embeddings interpolated as open_clip's)")
    parser.add_argument("--context_length", type=int, default=None,
                        help="write the model at this text context length (shorter: truncated; longer: interpolated)")
    args = parse(parser, argv)

    from clipmodule.checkpoints.io import load_checkpoint, save_checkpoint
    from clipmodule.models import count_parameters
    from clipmodule.models.resize import resize_model

    model = load_checkpoint(args.source, quick_gelu=args.quick_gelu, model=args.model, merge_lora=args.merge_lora)
    model = resize_model(model, image_size=args.image_size, context_length=args.context_length)
    written = save_checkpoint(model, args.destination, format=args.to)
    vision = model.config.vision
    tower = _tower(vision)
    activation = "QuickGELU" if model.config.quick_gelu else "GELU"
    print(f"{args.source} -> {written} ({args.to}): {tower} @ {vision.image_size}px, {activation}, "
          f"{count_parameters(model) / 1e6:.2f}M parameters")
    return 0


def list_models(argv: list[str]) -> int:
    parse(new_parser("clipmodule models", "List the registered model names."), argv)
    import torch
    from rich.console import Console
    from rich.table import Table

    from clipmodule.models import available_models, count_parameters, create_model

    table = Table("name", "image tower", "image size", "activation", "context", "tokenizer", "embed dim",
                  "parameters")
    for name in available_models():
        try:
            with torch.device("meta"):  # shapes only: no memory, no init cost (bigG is 2.5B parameters)
                model = create_model(name)
        except ClipModuleError as error:  # e.g. a timm tower without timm installed
            table.add_row(name, str(error)[:60], *[""] * 6)
            continue
        config = model.config
        tokenizer = "OpenAI BPE" if config.text.tokenizer == "openai_bpe" else config.text.tokenizer
        table.add_row(name, _tower(config.vision), str(config.vision.image_size),
                      "QuickGELU" if config.quick_gelu else "GELU", str(config.text.context_length),
                      f"{tokenizer} ({config.text.vocab_size})", str(config.embed_dim),
                      f"{count_parameters(model) / 1e6:.2f}M")
    Console(width=200).print(table)
    return 0


def _tower(vision) -> str:
    if vision.timm_model_name is not None:
        return f"timm {vision.timm_model_name} ({vision.timm_pool})"
    return f"ResNet {tuple(vision.layers)}" if vision.is_resnet else f"ViT {vision.layers}L p{vision.patch_size}"


__all__ = ["ClipModuleError", "list_models", "main"]
