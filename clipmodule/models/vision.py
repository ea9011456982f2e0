"""Image towers: the paper's ModifiedResNet (attention pooling) and the Vision Transformer."""

from __future__ import annotations

import contextlib
import functools
from collections import OrderedDict
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from clipmodule.models.config import VisionConfig
from clipmodule.models.transformer import LayerNorm, Transformer


class Bottleneck(nn.Module):
    """ResNet bottleneck whose strided convs are replaced by avg-pooling then a stride-1 conv (anti-aliasing)."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.avgpool = nn.AvgPool2d(stride) if stride > 1 else nn.Identity()
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.downsample = None
        if stride > 1 or inplanes != planes * self.expansion:
            # Keys "-1", "0", "1" keep OpenAI's state-dict names (downsample.0.weight, downsample.1.*).
            self.downsample = nn.Sequential(
                OrderedDict(
                    [
                        ("-1", nn.AvgPool2d(stride)),
                        ("0", nn.Conv2d(inplanes, planes * self.expansion, 1, bias=False)),
                        ("1", nn.BatchNorm2d(planes * self.expansion)),
                    ]
                )
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(self.avgpool(out)))
        return F.relu(out + identity)


class AttentionPool2d(nn.Module):
    """Pools the final feature map with one attention query: the mean of the map, attending over all positions."""

    def __init__(self, spatial_dim: int, embed_dim: int, heads: int, output_dim: int):
        super().__init__()
        self.positional_embedding = nn.Parameter(torch.randn(spatial_dim**2 + 1, embed_dim) / embed_dim**0.5)
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.c_proj = nn.Linear(embed_dim, output_dim)
        self.heads = heads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(2).transpose(1, 2)  # B, HW, C
        x = torch.cat([x.mean(dim=1, keepdim=True), x], dim=1) + self.positional_embedding.to(x.dtype)
        batch, length, width = x.shape

        def split_heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(batch, t.shape[1], self.heads, width // self.heads).transpose(1, 2)

        q = split_heads(self.q_proj(x[:, :1]))
        out = F.scaled_dot_product_attention(q, split_heads(self.k_proj(x)), split_heads(self.v_proj(x)))
        return self.c_proj(out.transpose(1, 2).reshape(batch, width))


@contextlib.contextmanager
def _frozen_batchnorm_stats(module: nn.Module) -> Iterator[None]:
    """BatchNorm in training mode normalises by the batch's statistics either way; with momentum 0 the running
    mean/var it updates in place stay as they were (the same kernel runs, so the recomputation saves the same
    tensors as the forward did), and the batch count is put back."""
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    saved = [(norm.momentum, norm.num_batches_tracked.clone()) for norm in norms]
    for norm in norms:
        norm.momentum = 0.0
    try:
        yield
    finally:
        for norm, (momentum, count) in zip(norms, saved):
            norm.momentum = momentum
            norm.num_batches_tracked.copy_(count)


def _recompute_without_stats(stage: nn.Module):
    """Gradient checkpointing runs a stage's forward again in backward: the second run must not update the
    BatchNorm running statistics a second time (forward context, recompute context)."""
    return contextlib.nullcontext(), _frozen_batchnorm_stats(stage)


class ModifiedResNet(nn.Module):
    """ResNet-D-like stem of three convs, anti-aliased downsampling, attention pooling instead of global avg."""

    def __init__(self, config: VisionConfig, output_dim: int):
        super().__init__()
        width, layers = config.width, config.layers
        self.conv1 = nn.Conv2d(3, width // 2, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width // 2)
        self.conv2 = nn.Conv2d(width // 2, width // 2, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width // 2)
        self.conv3 = nn.Conv2d(width // 2, width, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(width)
        self.avgpool = nn.AvgPool2d(2)
        inplanes = width
        stages = []
        for index, blocks in enumerate(layers):
            planes, stride = width * 2**index, 1 if index == 0 else 2
            stage = [Bottleneck(inplanes, planes, stride)]
            inplanes = planes * Bottleneck.expansion
            stage += [Bottleneck(inplanes, planes) for _ in range(1, blocks)]
            stages.append(nn.Sequential(*stage))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        embed_dim = width * 32  # layer4's output channels
        self.attnpool = AttentionPool2d(config.image_size // 32, embed_dim, embed_dim // config.head_width, output_dim)
        self.grad_checkpointing = False

    def init_weights(self) -> None:
        std = self.attnpool.c_proj.in_features**-0.5
        for proj in (self.attnpool.q_proj, self.attnpool.k_proj, self.attnpool.v_proj, self.attnpool.c_proj):
            nn.init.normal_(proj.weight, std=std)
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            for block in stage:
                nn.init.zeros_(block.bn3.weight)  # each residual branch starts as the identity

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        x = F.relu(self.bn3(self.conv3(x)))
        return self.avgpool(x)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The final feature map before pooling, [B, width*32, H/32, W/32]."""
        x = self.stem(x.to(self.conv1.weight.dtype))
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            if self.grad_checkpointing and self.training and torch.is_grad_enabled():
                x = torch.utils.checkpoint.checkpoint(stage, x, use_reentrant=False,
                                                      context_fn=functools.partial(_recompute_without_stats, stage))
            else:
                x = stage(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attnpool(self.forward_features(x))


class VisionTransformer(nn.Module):
    """ViT with a class token, pre-LN (`ln_pre`), and a linear projection of the class token's output."""

    def __init__(self, config: VisionConfig, output_dim: int, quick_gelu: bool = True):
        super().__init__()
        width, patch = config.width, config.patch_size
        grid = config.image_size // patch
        scale = width**-0.5
        self.patch_dropout = config.patch_dropout
        self.conv1 = nn.Conv2d(3, width, kernel_size=patch, stride=patch, bias=False)
        self.class_embedding = nn.Parameter(scale * torch.randn(width))
        self.positional_embedding = nn.Parameter(scale * torch.randn(grid**2 + 1, width))
        self.ln_pre = LayerNorm(width) if config.ln_pre else nn.Identity()  # CLIPA: no_ln_pre
        self.pool, self.final_ln_after_pool = config.pool, config.final_ln_after_pool
        heads = width // config.head_width
        self.transformer = Transformer(width, config.layers, heads, config.mlp_ratio, quick_gelu, config.ls_init_value,
                                       gelu_approximate=config.gelu_approximate)
        self.ln_post = LayerNorm(width)
        self.proj = nn.Parameter(scale * torch.randn(width, output_dim))

    def init_weights(self) -> None:
        self.transformer.init_weights()

    def drop_patches(self, x: torch.Tensor) -> torch.Tensor:
        """FLIP: keep a random subset of patch tokens (the class token always stays); training only."""
        if not self.training or self.patch_dropout <= 0.0:
            return x
        batch, length = x.shape[0], x.shape[1] - 1
        keep = max(1, int(length * (1.0 - self.patch_dropout)))
        indices = torch.rand(batch, length, device=x.device).topk(keep, dim=-1).indices + 1
        indices = torch.cat([indices.new_zeros(batch, 1), indices], dim=1)
        return x.gather(1, indices.unsqueeze(-1).expand(-1, -1, x.shape[-1]))

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """The transformer's input: the class token and the patch embeddings, positions added ([B, 1 + patches,
        width]; fewer patches under patch dropout)."""
        x = self.conv1(x.to(self.conv1.weight.dtype)).flatten(2).transpose(1, 2)  # B, grid*grid, width
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)
        return self.ln_pre(self.drop_patches(x))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Every token after the last block, layer-normed by `ln_post` ([B, 1 + patches, width]).

        LayerNorm acts per token, so normalising all tokens leaves the class token exactly as the paper's."""
        return self.ln_post(self.transformer(self.tokens(x)))

    def pool_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """The image embedding from every token after the last block (before `ln_post`): the class token's, or
        with pool "avg" (CLIPA) the mean of the patch tokens, layer-normed before or after the mean."""
        if self.pool == "avg":
            pooled = self.ln_post(x[:, 1:].mean(dim=1)) if self.final_ln_after_pool else self.ln_post(x)[:, 1:].mean(1)
        else:
            pooled = self.ln_post(x[:, 0])
        return pooled @ self.proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The class token's embedding (the last block computes the class token only: `Transformer`), or with
        pool "avg" (CLIPA) the mean of the patch tokens, layer-normed before or after the mean."""
        x = self.tokens(x)
        if self.pool == "avg":
            return self.pool_tokens(self.transformer(x))
        cls = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        return self.ln_post(self.transformer(x, pooled=cls)) @ self.proj


def build_vision_tower(config: VisionConfig, output_dim: int, quick_gelu: bool) -> nn.Module:
    if config.timm_model_name is not None:
        from clipmodule.models.timm_tower import TimmTower  # timm is optional: only these towers need it

        return TimmTower(config, output_dim)
    if config.is_resnet:
        return ModifiedResNet(config, output_dim)
    return VisionTransformer(config, output_dim, quick_gelu)
