"""A CLIP model at another image size or text context length: its position embeddings resized.

Image towers, as open_clip resizes them (`resize_pos_embed`, `force_image_size`):
- ViT: the grid part of `visual.positional_embedding` is interpolated bicubically (antialiased, corners not aligned)
  to the new grid; the class token's embedding is kept as it is.
- ModifiedResNet: the attention pool's embedding gets the same treatment, the mean token's kept (open_clip leaves
  it alone: its RN models read only their trained size; MaskCLIP resizes it this way for dense prediction).
- timm towers: timm's own `set_input_size` (what open_clip calls), which knows the trunk's prefix tokens (none for
  SigLIP's MAP models, class and register tokens for others). Trunks without position embeddings (ConvNeXt) read
  any size unchanged.

Text (our transformer): a shorter context keeps the first positions (truncation: a text that fits is encoded
exactly as before); a longer one interpolates linearly as open_clip's `resize_text_pos_embed`. `text_resize=
"interpolate"` interpolates in both directions (open_clip's behaviour). A Hugging Face text tower reads any context
up to its `max_position_embeddings`; beyond it is refused.
"""

from __future__ import annotations

import copy
import dataclasses
import math

import torch
import torch.nn.functional as F

from clipmodule.errors import ClipModuleError

TEXT_RESIZE = ("auto", "truncate", "interpolate")


def resize_grid_embedding(embedding: torch.Tensor, grid: tuple[int, int], prefix_tokens: int = 1,
                          interpolation: str = "bicubic", antialias: bool = True) -> torch.Tensor:
    """[prefix + h*w, C] position embeddings of a square grid -> [prefix + grid[0]*grid[1], C]; the prefix rows
    (class token) are kept, the grid is interpolated (open_clip's `resize_pos_embed`)."""
    prefix, cells = embedding[:prefix_tokens], embedding[prefix_tokens:]
    side = math.isqrt(cells.shape[0])
    if side * side != cells.shape[0]:
        raise ClipModuleError(f"position embedding of {cells.shape[0]} grid cells is not a square grid")
    if (side, side) == tuple(grid):
        return embedding
    image = cells.reshape(1, side, side, -1).permute(0, 3, 1, 2).float()
    image = F.interpolate(image, size=tuple(grid), mode=interpolation, antialias=antialias, align_corners=False)
    cells = image.permute(0, 2, 3, 1).reshape(grid[0] * grid[1], -1).to(embedding.dtype)
    return torch.cat([prefix, cells], dim=0)


def resize_sequence_embedding(embedding: torch.Tensor, length: int, mode: str = "auto") -> torch.Tensor:
    """[L, C] text position embeddings -> [length, C]: "truncate" keeps the first rows (shorter only),
    "interpolate" resamples linearly (open_clip's `resize_text_pos_embed`), "auto" truncates when shorter and
    interpolates when longer."""
    if mode not in TEXT_RESIZE:
        raise ClipModuleError(f"text_resize {mode!r} is not one of {', '.join(TEXT_RESIZE)}")
    old = embedding.shape[0]
    if length == old:
        return embedding
    if mode == "truncate" and length > old:
        raise ClipModuleError(f"cannot truncate a {old}-token context to {length} tokens: "
                              "use text_resize='interpolate'")
    if mode == "truncate" or (mode == "auto" and length < old):
        return embedding[:length].clone()
    sequence = embedding.t().unsqueeze(0).float()
    sequence = F.interpolate(sequence, size=length, mode="linear", antialias=False, align_corners=False)
    return sequence[0].t().to(embedding.dtype).contiguous()


def _resized_timm_state(model, image_size: int) -> dict[str, torch.Tensor]:
    """The trunk's weights as timm's `set_input_size` leaves them (on a copy; the model is untouched)."""
    trunk = copy.deepcopy(model.visual.trunk)
    if hasattr(trunk, "set_input_size") and getattr(trunk, "pos_embed", None) is not None:
        trunk.set_input_size(img_size=(image_size, image_size))
    return {f"visual.trunk.{key}": value for key, value in trunk.state_dict().items()}


def _resized_vision_state(model, state: dict[str, torch.Tensor], image_size: int) -> dict[str, torch.Tensor]:
    vision = model.config.vision
    if vision.timm_model_name is not None:
        state.update(_resized_timm_state(model, image_size))
    elif vision.is_resnet:
        if image_size % 32:
            raise ClipModuleError(f"image size {image_size} is not a multiple of 32 (a ResNet tower's stride)")
        key = "visual.attnpool.positional_embedding"
        side = image_size // 32
        state[key] = resize_grid_embedding(state[key], (side, side))
    else:
        if image_size % vision.patch_size:
            raise ClipModuleError(f"image size {image_size} is not a multiple of the patch size {vision.patch_size}")
        side = image_size // vision.patch_size
        key = "visual.positional_embedding"
        state[key] = resize_grid_embedding(state[key], (side, side))
    return state


def _resized_text_state(model, state: dict[str, torch.Tensor], length: int, mode: str) -> dict[str, torch.Tensor]:
    text = model.config.text
    if text.hf_model_name is not None:
        limit = getattr(model.text.hf_config, "max_position_embeddings", None)
        if limit is not None and length > limit:
            raise ClipModuleError(f"the text tower {text.hf_model_name!r} reads at most {limit} tokens, not {length}")
        return state
    state["positional_embedding"] = resize_sequence_embedding(state["positional_embedding"], length, mode)
    return state


def resized_config(config, image_size: int | None = None, context_length: int | None = None):
    """`config` at another image size / context length (a timm trunk records its input size)."""
    vision, text = config.vision, config.text
    if image_size is not None and image_size != vision.image_size:
        if image_size < 1:
            raise ClipModuleError(f"image size must be positive, got {image_size}")
        extra = {"timm_input_size": image_size} if vision.timm_model_name is not None else {}
        vision = dataclasses.replace(vision, image_size=image_size, **extra)
    if context_length is not None and context_length != text.context_length:
        if context_length < 1:
            raise ClipModuleError(f"context length must be positive, got {context_length}")
        text = dataclasses.replace(text, context_length=context_length)
    return dataclasses.replace(config, vision=vision, text=text)


def resize_model(model, image_size: int | None = None, context_length: int | None = None,
                 text_resize: str = "auto"):
    """A new model (same class, eval/train mode and dtype as `model`) at `image_size` and/or `context_length`,
    its position embeddings resized (see the module's docstring); `preprocess_cfg` follows the new size.
    `model` is returned unchanged when nothing changes."""
    config = resized_config(model.config, image_size, context_length)
    if config == model.config:
        return model
    state = {key: value.detach() for key, value in model.state_dict().items()}
    if config.vision.image_size != model.config.vision.image_size:
        state = _resized_vision_state(model, state, config.vision.image_size)
    if config.text.context_length != model.config.text.context_length:
        state = _resized_text_state(model, state, config.text.context_length, text_resize)
    parameter = next(model.parameters())
    with torch.device(parameter.device):
        network = type(model)(config)
    network.load_state_dict(state, strict=True)
    network = network.to(parameter.dtype).train(model.training)
    for name in ("tokenizer_folder", "pretrained"):
        if hasattr(model, name):
            setattr(network, name, getattr(model, name))
    preprocess = getattr(model, "preprocess_cfg", None)
    if preprocess is not None:
        network.preprocess_cfg = dataclasses.replace(preprocess, size=config.vision.image_size)
    return network
