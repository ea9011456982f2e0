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
    parser = new_parser("clipmodule models", "List the registered model names (open_clip's whole zoo, our small "
                        "configs), or with --pretrained open_clip's released weights by tag and which are local.")
    parser.add_argument("--pretrained", action="store_true",
                        help="list open_clip's (name, tag) table: hub repo, licence, and the local file if cached")
    parser.add_argument("--parameters", action="store_true",
                        help="also count the parameters of timm and Hugging Face towers (builds them on the meta "
                             "device: slower)")
    args = parse(parser, argv)
    from rich.console import Console

    table = _pretrained_table() if args.pretrained else _models_table(args.parameters)
    Console(width=220).print(table)
    return 0


def _models_table(all_parameters: bool):
    import torch
    from rich.table import Table

    from clipmodule.models import REFUSED_MODELS, available_models, count_parameters, create_model, get_model_config

    table = Table("name", "image tower", "image size", "activation", "context", "tokenizer", "embed dim",
                  "parameters")
    for name in available_models():
        if name in REFUSED_MODELS:
            table.add_row(name, REFUSED_MODELS[name].split(": ", 1)[-1][:70], *[""] * 6)
            continue
        config = get_model_config(name)
        parameters = "(--parameters)"
        if all_parameters or (config.vision.timm_model_name is None and config.text.hf_model_name is None):
            try:
                with torch.device("meta"):  # shapes only: no memory, no init cost (bigG is 2.5B parameters)
                    parameters = f"{count_parameters(create_model(name)) / 1e6:.2f}M"
            except ClipModuleError as error:  # a timm tower without timm, an HF tower without its config.json
                parameters = str(error)[:40]
        tokenizer = "OpenAI BPE" if config.text.tokenizer == "openai_bpe" else config.text.tokenizer
        table.add_row(name, _tower(config.vision), str(config.vision.image_size),
                      "QuickGELU" if config.quick_gelu else "GELU", str(config.text.context_length),
                      f"{tokenizer} ({config.text.vocab_size})", str(config.embed_dim), parameters)
    return table


def _pretrained_table():
    from rich.table import Table

    from clipmodule.checkpoints.pretrained import hub_cache_dir, local_file, pretrained_tags

    cache = hub_cache_dir()
    table = Table("name", "tag", "hub repo", "licence", "QuickGELU", "local file @ revision",
                  caption=f"Hugging Face cache: {cache} (`huggingface-cli download REPO` fetches a missing one)")
    for row in pretrained_tags():
        found = local_file(row, cache)
        table.add_row(row.name, row.tag, row.repo, row.licence, "yes" if row.quick_gelu else "",
                      f"{found.name} @ {found.parent.name[:10]}" if found else "-")
    return table


def _tower(vision) -> str:
    if vision.timm_model_name is not None:
        return f"timm {vision.timm_model_name} ({vision.timm_pool})"
    return f"ResNet {tuple(vision.layers)}" if vision.is_resnet else f"ViT {vision.layers}L p{vision.patch_size}"


__all__ = ["ClipModuleError", "list_models", "main"]
