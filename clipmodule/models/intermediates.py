"""Intermediate tokens of both towers, as open_clip's `forward_intermediates` returns them.

`forward_intermediates(model, image, text, ...)` gives a dict: "image_intermediates" (each chosen block's output;
ViT: patch tokens as [B, C, H, W] ("NCHW") or [B, H*W, C] ("NLC"), the class token under
"image_intermediates_prefix" when asked; ModifiedResNet: the stem's and each stage's feature maps; timm: the
trunk's own `forward_intermediates`), "text_intermediates" ([B, L, C] per block; a Hugging Face tower: its hidden
states after each layer), and "image_features" / "text_features" (L2-normalised unless `normalize=False`).

Indices are open_clip's (timm's): None all blocks, an int n the last n, a list the blocks named (negative from the
end). `normalize_intermediates` applies the tower's final norm (ln_post, ln_final) to each intermediate.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from clipmodule.errors import ClipModuleError

Indices = int | Sequence[int] | None
FORMATS = ("NCHW", "NLC")


def take_indices(count: int, indices: Indices) -> list[int]:
    """Absolute block indices: None -> all, n -> the last n, a list -> those (negative counted from the end)."""
    if indices is None:
        indices = count
    if isinstance(indices, int):
        if not 0 < indices <= count:
            raise ClipModuleError(f"last-n indices {indices} is out of range (1 to {count})")
        return list(range(count - indices, count))
    taken = []
    for index in indices:
        absolute = count + index if index < 0 else index
        if not 0 <= absolute < count:
            raise ClipModuleError(f"block index {index} is out of range (0 to {count - 1})")
        taken.append(absolute)
    return taken


def _run_blocks(blocks, x: torch.Tensor, taken: list[int], causal: bool = False):
    intermediates = []
    for index, block in enumerate(blocks):
        x = block(x, causal=causal)
        if index in taken:
            intermediates.append(x)
    return x, intermediates


def vit_intermediates(visual, image: torch.Tensor, indices: Indices = None, output_fmt: str = "NCHW",
                      normalize_intermediates: bool = False, output_extra_tokens: bool = False,
                      intermediates_only: bool = False) -> dict:
    if output_fmt not in FORMATS:
        raise ClipModuleError(f"output_fmt {output_fmt!r} is not one of {', '.join(FORMATS)}")
    blocks = visual.transformer.resblocks
    x, intermediates = _run_blocks(blocks, visual.tokens(image), take_indices(len(blocks), indices))
    if normalize_intermediates:
        intermediates = [visual.ln_post(y) for y in intermediates]
    output = {}
    if output_extra_tokens:
        output["image_intermediates_prefix"] = [y[:, :1] for y in intermediates]
    intermediates = [y[:, 1:] for y in intermediates]
    if output_fmt == "NCHW":
        patch = visual.conv1.kernel_size
        height, width = image.shape[-2] // patch[0], image.shape[-1] // patch[1]
        intermediates = [y.reshape(y.shape[0], height, width, -1).permute(0, 3, 1, 2).contiguous()
                         for y in intermediates]
    output["image_intermediates"] = intermediates
    if not intermediates_only:
        output["image_features"] = visual.pool_tokens(x)
    return output


def resnet_intermediates(visual, image: torch.Tensor, indices: Indices = None, output_fmt: str = "NCHW",
                         intermediates_only: bool = False, **_) -> dict:
    """Stem, then the four stages (5 "blocks", as open_clip's); feature maps are NCHW only."""
    if output_fmt != "NCHW":
        raise ClipModuleError("a ResNet tower's intermediates are feature maps: output_fmt must be 'NCHW'")
    taken = take_indices(5, indices)
    x = image.to(visual.conv1.weight.dtype)
    intermediates = []
    for index, stage in enumerate((visual.stem, visual.layer1, visual.layer2, visual.layer3, visual.layer4)):
        x = stage(x)
        if index in taken:
            intermediates.append(x)
    output = {"image_intermediates": intermediates}
    if not intermediates_only:
        output["image_features"] = visual.attnpool(x)
    return output


def timm_intermediates(visual, image: torch.Tensor, indices: Indices = None, output_fmt: str = "NCHW",
                       normalize_intermediates: bool = False, output_extra_tokens: bool = False,
                       intermediates_only: bool = False) -> dict:
    """The trunk's own `forward_intermediates`; the features through its head and our projection (open_clip's)."""
    trunk = visual.trunk
    if not hasattr(trunk, "forward_intermediates"):
        raise ClipModuleError(f"timm's {type(trunk).__name__} has no forward_intermediates")
    extra = {"return_prefix_tokens": True} if output_extra_tokens else {}
    result = trunk.forward_intermediates(image, indices=indices, intermediates_only=intermediates_only,
                                         norm=normalize_intermediates, output_fmt=output_fmt, **extra)
    intermediates = result if intermediates_only else result[1]
    output = {}
    if output_extra_tokens and intermediates and isinstance(intermediates[0], tuple):
        output["image_intermediates_prefix"] = [pair[1] for pair in intermediates]
        intermediates = [pair[0] for pair in intermediates]
    output["image_intermediates"] = intermediates
    if not intermediates_only:
        output["image_features"] = visual.head(trunk.forward_head(result[0]))
    return output


def image_intermediates(visual, image: torch.Tensor, **options) -> dict:
    if hasattr(visual, "trunk"):
        return timm_intermediates(visual, image, **options)
    if hasattr(visual, "attnpool"):
        return resnet_intermediates(visual, image, **options)
    return vit_intermediates(visual, image, **options)


def _hf_text_intermediates(model, text: torch.Tensor, indices: Indices, intermediates_only: bool) -> dict:
    tower = model.text
    mask = (text != tower.hf_config.pad_token_id).long()
    out = tower.transformer(input_ids=text, attention_mask=mask, output_hidden_states=True)
    states = out.hidden_states[1:]  # [0] is the embeddings
    output = {"text_intermediates": [states[index] for index in take_indices(len(states), indices)]}
    if not intermediates_only:
        output["text_features"] = tower(text)
    return output


def text_intermediates(model, text: torch.Tensor, indices: Indices = None, normalize_intermediates: bool = False,
                       intermediates_only: bool = False) -> dict:
    """Every chosen block's [B, L, width] output on the full context (no padding cut), as open_clip's."""
    if model.config.text.hf_model_name is not None:
        return _hf_text_intermediates(model, text, indices, intermediates_only)
    config = model.config.text
    x = model.token_embedding(text) + model.positional_embedding[: text.shape[1]].to(model.dtype)
    blocks = model.transformer.resblocks
    x, intermediates = _run_blocks(blocks, x, take_indices(len(blocks), indices), causal=config.causal)
    if normalize_intermediates:
        intermediates = [model.ln_final(y) for y in intermediates]
    output = {"text_intermediates": intermediates}
    if not intermediates_only:
        x = model.ln_final(x)
        rows = torch.arange(x.shape[0], device=x.device)
        pooled = x[rows, -1] if config.pool == "last" else x[rows, text.argmax(dim=-1)]
        projection = model.text_projection
        output["text_features"] = projection(pooled) if isinstance(projection, torch.nn.Linear) \
            else pooled @ projection
    return output


def forward_intermediates(model, image: torch.Tensor | None = None, text: torch.Tensor | None = None,  # noqa: PLR0913
                          indices: Indices = None, image_indices: Indices = None, text_indices: Indices = None,
                          output_fmt: str = "NCHW", normalize: bool = True, normalize_intermediates: bool = False,
                          intermediates_only: bool = False, output_extra_tokens: bool = False) -> dict:
    """See the module's docstring; `indices` serves both towers where `image_indices` / `text_indices` are not
    given, `output_fmt` is the image intermediates' layout (text ones are NLC)."""
    output: dict = {}
    if image is not None:
        output.update(image_intermediates(
            model.visual, image.to(model.dtype), indices=image_indices if image_indices is not None else indices,
            output_fmt=output_fmt, normalize_intermediates=normalize_intermediates,
            output_extra_tokens=output_extra_tokens, intermediates_only=intermediates_only))
    if text is not None:
        output.update(text_intermediates(model, text, text_indices if text_indices is not None else indices,
                                         normalize_intermediates, intermediates_only))
    if normalize and not intermediates_only:
        for key in ("image_features", "text_features"):
            if key in output:
                output[key] = F.normalize(output[key], dim=-1)
    return output


def image_tokens(visual, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(the pooled image embedding, the final patch tokens [B, patches, C]): a ViT's tokens after `ln_post` (open_clip's
    `output_tokens`), a ResNet's final feature map flattened, a timm trunk's normed output without prefix tokens."""
    if hasattr(visual, "trunk"):
        trunk = visual.trunk
        features = trunk.forward_features(image)
        pooled = visual.head(trunk.forward_head(features))
        if features.dim() == 4:  # a convolutional trunk: NCHW
            return pooled, features.flatten(2).transpose(1, 2)
        return pooled, features[:, getattr(trunk, "num_prefix_tokens", 0):]
    if hasattr(visual, "attnpool"):
        features = visual.forward_features(image)
        return visual.attnpool(features), features.flatten(2).transpose(1, 2)
    x = visual.transformer(visual.tokens(image))
    return visual.pool_tokens(x), visual.ln_post(x)[:, 1:]
