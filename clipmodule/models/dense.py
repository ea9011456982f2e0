"""MaskCLIP's dense features (Zhou et al., "Extract Free Dense Labels from CLIP", ECCV 2022): per-patch embeddings
in the joint image-text space, from a CLIP image tower with no training.

The pooled embedding comes out of one attention query (the class token, the attention pool's mean token, the MAP
head's latent). Each patch's own *value*, sent through the same output path, lands in the same space:
- ViT: the last block's value projection of `ln_1(x)` (x: the last block's input), its attention output
  projection, `ln_post` and `proj`; the last block's query/key attention, residual and MLP are skipped (the
  paper's value path, `vit_path="value"`, the default). `vit_path="released"` is MaskCLIP's released backbone
  instead (mmseg/models/backbones/vit.py with `return_qkv`, `final_norm`): the value through the output
  projection plus the residual x, then the block's MLP residual, then `ln_post` and `proj`.
- ModifiedResNet: the attention pool's value and output projections applied to the final feature map as 1x1
  convolutions (no positional embedding, so any size works).
- timm MAP towers (SigLIP): the MAP head's value path, the head's projection and its MLP residual, per token.

A ViT reads any image size whose sides are multiples of the patch (position embeddings interpolated on the fly as
`models.resize`); a timm tower reads its own size (resize it with `models.resize.resize_model`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from clipmodule.errors import ClipModuleError
from clipmodule.models.resize import resize_grid_embedding


@dataclass
class DenseOutput:
    """features: [B, embed_dim, h, w]; keys: [B, h*w, width] the last attention's keys (key smoothing; a ViT's through
    its output projection, as MaskCLIP's released backbone gives them), or None."""

    features: torch.Tensor
    keys: torch.Tensor | None


def _vit_tokens(visual, image: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
    """The transformer's input at the image's own grid (position embeddings interpolated when it differs)."""
    patch = visual.conv1.kernel_size[0]
    if image.shape[-2] % patch or image.shape[-1] % patch:
        raise ClipModuleError(f"image size {tuple(image.shape[-2:])} is not a multiple of the patch size {patch}")
    x = visual.conv1(image.to(visual.conv1.weight.dtype))
    grid = (x.shape[-2], x.shape[-1])
    x = x.flatten(2).transpose(1, 2)
    position = resize_grid_embedding(visual.positional_embedding, grid)
    cls = visual.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
    return visual.ln_pre(torch.cat([cls, x], dim=1) + position.to(x.dtype)), grid


VIT_PATHS = ("value", "released")


def vit_dense(visual, image: torch.Tensor, path: str = "value") -> DenseOutput:
    x, grid = _vit_tokens(visual, image)
    blocks = visual.transformer.resblocks
    for block in blocks[:-1]:
        x = block(x)
    last = blocks[-1]
    width = x.shape[-1]
    _, weight_k, weight_v = last.attn.in_proj_weight.split(width)
    _, bias_k, bias_v = last.attn.in_proj_bias.split(width)
    normed = last.ln_1(x)
    values = last.attn.out_proj(F.linear(normed, weight_v, bias_v))
    if path == "released":  # v = out_proj(v) + x; v = v + mlp(ln_2(v)) (the block's own layer scales kept)
        values = x + last.ls_1(values)
        values = values + last.ls_2(last.mlp(last.ln_2(values)))
    features = visual.ln_post(values[:, 1:]) @ visual.proj
    keys = last.attn.out_proj(F.linear(normed[:, 1:], weight_k, bias_k))  # as MaskCLIP's released backbone returns k
    return DenseOutput(features.transpose(1, 2).reshape(x.shape[0], -1, *grid), keys)


def resnet_dense(visual, image: torch.Tensor) -> DenseOutput:
    pool = visual.attnpool
    x = visual.forward_features(image)
    as_conv = lambda linear: linear.weight[:, :, None, None]  # noqa: E731 (a Linear is a 1x1 convolution)
    values = F.conv2d(x, as_conv(pool.v_proj), pool.v_proj.bias)
    features = F.conv2d(values, as_conv(pool.c_proj), pool.c_proj.bias)
    keys = F.conv2d(x, as_conv(pool.k_proj), pool.k_proj.bias).flatten(2).transpose(1, 2)
    return DenseOutput(features, keys)


def timm_map_dense(visual, image: torch.Tensor) -> DenseOutput:
    trunk = visual.trunk
    head = getattr(trunk, "attn_pool", None)
    if head is None or not hasattr(head, "kv"):
        raise ClipModuleError(f"dense features of a timm tower need a MAP head (SigLIP's); {type(trunk).__name__} "
                              f"pools with {getattr(trunk, 'global_pool', 'its own head')!r}")
    tokens = trunk.forward_features(image)[:, getattr(trunk, "num_prefix_tokens", 0):]
    if getattr(head, "pos_embed", None) is not None:
        tokens = tokens + head.pos_embed.unsqueeze(0).to(tokens.dtype)
    width = tokens.shape[-1]
    keys, values = F.linear(tokens, head.kv.weight, head.kv.bias).split(width, dim=-1)
    x = head.proj(values)
    if head.mlp is not None:
        x = x + head.mlp(head.norm(x))
    x = visual.head(trunk.head(trunk.fc_norm(x)))
    side = trunk.patch_embed.grid_size
    return DenseOutput(x.transpose(1, 2).reshape(x.shape[0], -1, *side), keys)


def dense_output(model, image: torch.Tensor, vit_path: str = "value") -> DenseOutput:
    """MaskCLIP's per-patch embeddings of `image` [B, 3, H, W] and the keys of the attention they replace
    (`vit_path`: a ViT's "value" or "released" path, see the module's docstring; a ResNet's path is the same both
    ways, as MaskCLIP's released head; a timm MAP tower has only its value path)."""
    if vit_path not in VIT_PATHS:
        raise ClipModuleError(f"vit_path {vit_path!r}: expected one of {', '.join(VIT_PATHS)}")
    visual = model.visual
    image = image.to(model.dtype)
    if hasattr(visual, "trunk"):
        if vit_path != "value":
            raise ClipModuleError(f"vit_path {vit_path!r}: a timm tower's dense features have only the value path")
        return timm_map_dense(visual, image)
    if hasattr(visual, "attnpool"):
        return resnet_dense(visual, image)
    return vit_dense(visual, image, vit_path)


def encode_image_dense(model, image: torch.Tensor, normalize: bool = False, vit_path: str = "value") -> torch.Tensor:
    """[B, embed_dim, h, w] per-patch embeddings in the joint space (see the module's docstring)."""
    features = dense_output(model, image, vit_path).features
    return F.normalize(features, dim=1) if normalize else features


def pixel_text_scores(dense_features: torch.Tensor, text_embeddings: torch.Tensor,
                      scale: float | torch.Tensor = 1.0) -> torch.Tensor:
    """DenseCLIP's score maps: [B, K, h, w] = scale * cos(dense feature, class text embedding), for `text_embeddings`
    [K, embed_dim] (or the zero-shot classifier's [embed_dim, K] transposed)."""
    features = F.normalize(dense_features.float(), dim=1)
    texts = F.normalize(text_embeddings.float(), dim=-1)
    return scale * torch.einsum("bchw,kc->bkhw", features, texts)
