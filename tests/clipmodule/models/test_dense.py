"""MaskCLIP's dense features equal a brute-force recomputation of the last attention with each patch attending only
to itself (ViT: the last block; ModifiedResNet: the attention pool), to 1e-6."""

import torch
from torch import nn

import clipmodule
from clipmodule.models.dense import pixel_text_scores
from tests.clipmodule.models.open_clip_tiny import CONFIGS, build_open_clip, write_hub_folder


def _load(kind, tmp_path):
    config = CONFIGS[kind]
    write_hub_folder(build_open_clip(config), config, tmp_path / kind)
    model, _ = clipmodule.load(tmp_path / kind)
    return model.double()


def _attention(width: int, heads: int, q, k, v, out) -> nn.MultiheadAttention:
    """torch's own multi-head attention holding the given projections."""
    attention = nn.MultiheadAttention(width, heads, batch_first=True).double()
    with torch.no_grad():
        attention.in_proj_weight.copy_(torch.cat([q[0], k[0], v[0]]))
        attention.in_proj_bias.copy_(torch.cat([q[1], k[1], v[1]]))
        attention.out_proj.weight.copy_(out.weight)
        attention.out_proj.bias.copy_(out.bias)
    return attention


def test_vit_dense_is_the_last_block_with_self_only_attention(tmp_path):
    model = _load("vit", tmp_path)
    images = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        out = model.forward_intermediates(images, image_indices=[-2], output_fmt="NLC", output_extra_tokens=True)
        x = torch.cat([out["image_intermediates_prefix"][0], out["image_intermediates"][0]], dim=1)
        last = model.visual.transformer.resblocks[-1]
        weights, biases = last.attn.in_proj_weight.split(64), last.attn.in_proj_bias.split(64)
        attention = _attention(64, 2, *zip(weights, biases), last.attn.out_proj)
        normed = last.ln_1(x)
        alone = ~torch.eye(x.shape[1], dtype=torch.bool)  # each token attends to itself only
        attended = attention(normed, normed, normed, attn_mask=alone, need_weights=False)[0]
        expected = (model.visual.ln_post(attended[:, 1:]) @ model.visual.proj).transpose(1, 2).reshape(2, 32, 4, 4)
        dense = model.encode_image_dense(images)
    assert dense.shape == (2, 32, 4, 4)
    assert (dense - expected).abs().max() <= 1e-6


def test_resnet_dense_is_the_attention_pool_on_each_position_alone(tmp_path):
    model = _load("resnet", tmp_path)
    images = torch.randn(1, 3, 64, 64, dtype=torch.float64)
    pool = model.visual.attnpool
    with torch.no_grad():
        feature_map = model.forward_intermediates(images, image_indices=[-1])["image_intermediates"][0]
        width = feature_map.shape[1]
        attention = _attention(width, pool.heads, (pool.q_proj.weight, pool.q_proj.bias),
                               (pool.k_proj.weight, pool.k_proj.bias), (pool.v_proj.weight, pool.v_proj.bias),
                               nn.Linear(width, width).double())
        expected = torch.empty(1, 32, *feature_map.shape[-2:], dtype=torch.float64)
        for row in range(feature_map.shape[2]):
            for column in range(feature_map.shape[3]):
                token = feature_map[:, :, row, column][:, None]  # one token: the softmax over it is 1
                attention.out_proj.weight.copy_(torch.eye(width, dtype=torch.float64))
                attention.out_proj.bias.zero_()
                attended = attention(token, token, token, need_weights=False)[0]
                expected[:, :, row, column] = pool.c_proj(attended[:, 0])
        dense = model.encode_image_dense(images)
    assert (dense - expected).abs().max() <= 1e-6


def test_vit_dense_reads_other_sizes_and_scores_are_cosines(tmp_path):
    model = _load("vit", tmp_path)
    with torch.no_grad():
        dense = model.encode_image_dense(torch.randn(1, 3, 48, 64, dtype=torch.float64), normalize=True)
    assert dense.shape == (1, 32, 6, 8)
    text = torch.randn(3, 32, dtype=torch.float64)
    scores = pixel_text_scores(dense, text, scale=2.0)
    expected = 2.0 * torch.nn.functional.cosine_similarity(dense[:, None], text[None, :, :, None, None], dim=2)
    assert scores.shape == (1, 3, 6, 8) and torch.allclose(scores.double(), expected, atol=1e-5)


def test_siglip_map_dense_is_the_map_head_on_each_token_alone(tmp_path):
    model = _load("siglip", tmp_path)
    trunk = model.visual.trunk
    images = torch.randn(1, 3, 224, 224, dtype=torch.float64)
    with torch.no_grad():
        tokens = trunk.forward_features(images)
        pooled = [trunk.attn_pool(tokens[:, index:index + 1]) for index in range(tokens.shape[1])]  # a query alone
        expected = model.visual.head(trunk.head(trunk.fc_norm(torch.stack(pooled, dim=1))))
        dense = model.encode_image_dense(images)
    assert dense.shape == (1, 96, 14, 14)
    assert (dense.flatten(2).transpose(1, 2) - expected).abs().max() <= 1e-6


def test_vit_released_path_is_maskclips_released_backbone(tmp_path):
    """`vit_path="released"`: MaskCLIP's released ViT (mmseg/models/backbones/vit.py, return_qkv and final_norm as
    its configs set them) restated on open_clip's own modules: q, k, v each through the output projection, v plus
    the block's input, then the block's MLP residual on it, the final norm on v, the projection."""
    import torch.nn.functional as F

    config = CONFIGS["vit"]
    reference = build_open_clip(config).double().eval()
    write_hub_folder(reference, config, tmp_path / "vit")
    model = clipmodule.load(tmp_path / "vit")[0].double()
    images = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        out = model.forward_intermediates(images, image_indices=[-2], output_fmt="NLC", output_extra_tokens=True)
        x = torch.cat([out["image_intermediates_prefix"][0], out["image_intermediates"][0]], dim=1)
        layer = reference.visual.transformer.resblocks[-1]
        y = F.linear(layer.ln_1(x), layer.attn.in_proj_weight, layer.attn.in_proj_bias)
        n, length, c = y.shape
        y = y.view(n, length, 3, c // 3).permute(2, 0, 1, 3).reshape(3 * n, length, c // 3)
        y = F.linear(y, layer.attn.out_proj.weight, layer.attn.out_proj.bias)
        _, _, v = y.tensor_split(3, dim=0)
        v = v + x
        v = v + layer.mlp(layer.ln_2(v))
        v = reference.visual.ln_post(v)[:, 1:] @ reference.visual.proj
        expected = v.transpose(1, 2).reshape(2, 32, 4, 4)
        released = model.encode_image_dense(images, vit_path="released")
        value = model.encode_image_dense(images)
    assert (released - expected).abs().max() <= 1e-6
    assert (value - expected).abs().max() > 1e-3  # the paper's value path is another one
