"""The pre-LN transformer shared by the text tower and the ViT image tower.

Parameter names follow OpenAI's release (`in_proj_weight`, `c_fc`, `c_proj`, `ln_1`, ...), so an OpenAI or
open_clip state dict loads without renaming. Tensors are batch-first; attention runs through
`F.scaled_dot_product_attention`.

A tower that pools one token per sample (the ViT's class token, the text tower's end-of-text token) asks
`Transformer.forward` for that token only (`pooled=`). The last block then computes its query, its attention
output and its MLP for that one token; only the keys and values need every token. Each token's output depends
on the others only through attention's keys and values, so the pooled token comes out as the full pass would
give it (to float rounding) at ~1/12 of the last block's per-token work: a third less for a 3-layer tower.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint


class QuickGELU(nn.Module):
    """The sigmoid approximation of GELU that OpenAI's CLIP models were trained with."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class LayerNorm(nn.LayerNorm):
    """LayerNorm computed in fp32 and cast back, so fp16/bf16 weights stay stable."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        normed = F.layer_norm(x.float(), self.normalized_shape, self.weight.float(), self.bias.float(), self.eps)
        return normed.to(dtype)


class SelfAttention(nn.Module):
    """Multi-head self-attention with a packed q/k/v projection (OpenAI's layout)."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.out_proj = nn.Linear(width, width)
        self.in_proj_lora = None
        """Low-rank adapters on the packed projection (`clipmodule.models.lora`): [..., width] -> [..., 3 width]."""

    def forward(self, x: torch.Tensor, causal: bool = False) -> torch.Tensor:
        batch, length, width = x.shape
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)
        if self.in_proj_lora is not None:
            qkv = qkv + self.in_proj_lora(x)
        q, k, v = qkv.view(batch, length, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        return self.out_proj(out.transpose(1, 2).reshape(batch, length, width))

    def forward_query(self, x: torch.Tensor, query: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """Attention of one query token per sample (`query` [B, 1, width]) over all of `x`'s tokens; `mask`
        ([B, 1, 1, L] booleans, or None for all) says which keys each query may see."""
        batch, length, width = x.shape
        head_width = width // self.heads
        weight_q, weight_kv = self.in_proj_weight.split([width, 2 * width])
        bias_q, bias_kv = self.in_proj_bias.split([width, 2 * width])
        q, kv = F.linear(query, weight_q, bias_q), F.linear(x, weight_kv, bias_kv)
        if self.in_proj_lora is not None:
            q, kv = q + self.in_proj_lora(query)[..., :width], kv + self.in_proj_lora(x)[..., width:]
        q = q.view(batch, 1, self.heads, head_width).transpose(1, 2)
        kv = kv.view(batch, length, 2, self.heads, head_width)
        k, v = kv.permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.out_proj(out.transpose(1, 2).reshape(batch, 1, width))


class LayerScale(nn.Module):
    """A learned per-channel gain on a residual branch (CaiT); open_clip names its parameter `gamma`."""

    def __init__(self, width: int, init_value: float):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((width,), float(init_value)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class ResidualAttentionBlock(nn.Module):
    def __init__(self, width: int, heads: int, mlp_ratio: float, quick_gelu: bool,
                 ls_init_value: float | None = None, norm_eps: float = 1e-5, gelu_approximate: str = "none"):
        super().__init__()
        hidden = int(width * mlp_ratio)
        self.ln_1 = LayerNorm(width, eps=norm_eps)
        self.attn = SelfAttention(width, heads)
        self.ln_2 = LayerNorm(width, eps=norm_eps)
        activation = QuickGELU() if quick_gelu else nn.GELU(approximate=gelu_approximate)
        self.mlp = nn.Sequential(
            OrderedDict(c_fc=nn.Linear(width, hidden), gelu=activation, c_proj=nn.Linear(hidden, width))
        )
        scaled = ls_init_value is not None
        self.ls_1 = LayerScale(width, ls_init_value) if scaled else nn.Identity()
        self.ls_2 = LayerScale(width, ls_init_value) if scaled else nn.Identity()

    def forward(self, x: torch.Tensor, causal: bool = False, pooled: torch.Tensor | None = None) -> torch.Tensor:
        """[B, L, width] → [B, L, width]; with `pooled` (each sample's token position, [B]) only those tokens'
        outputs, [B, width]."""
        if pooled is None:
            x = x + self.ls_1(self.attn(self.ln_1(x), causal=causal))
            return x + self.ls_2(self.mlp(self.ln_2(x)))
        normed = self.ln_1(x)
        rows = torch.arange(x.shape[0], device=x.device)
        mask = None
        if causal:  # the pooled token sees itself and the tokens before it
            mask = (torch.arange(x.shape[1], device=x.device) <= pooled[:, None])[:, None, None, :]
        query = x[rows, pooled].unsqueeze(1)
        query = query + self.ls_1(self.attn.forward_query(normed, normed[rows, pooled].unsqueeze(1), mask))
        return (query + self.ls_2(self.mlp(self.ln_2(query)))).squeeze(1)


class Transformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int, mlp_ratio: float = 4.0, quick_gelu: bool = True,
                 ls_init_value: float | None = None, norm_eps: float = 1e-5, gelu_approximate: str = "none"):
        super().__init__()
        self.width = width
        self.resblocks = nn.ModuleList(
            ResidualAttentionBlock(width, heads, mlp_ratio, quick_gelu, ls_init_value, norm_eps, gelu_approximate)
            for _ in range(layers)
        )
        self.grad_checkpointing = False

    def forward(self, x: torch.Tensor, causal: bool = False, pooled: torch.Tensor | None = None) -> torch.Tensor:
        """Every token's output [B, L, width], or with `pooled` (a token position per sample, [B]) only those
        tokens' outputs [B, width], the last block computing nothing else (see the module's docstring)."""
        last = len(self.resblocks) - 1
        if last < 0 and pooled is not None:
            return x[torch.arange(x.shape[0], device=x.device), pooled]
        for index, block in enumerate(self.resblocks):
            at = pooled if index == last else None
            if self.grad_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(block, x, causal, at, use_reentrant=False)
            else:
                x = block(x, causal=causal, pooled=at)
        return x

    def init_weights(self) -> None:
        """OpenAI's init: residual projections scaled down by the depth."""
        attn_std = self.width**-0.5
        proj_std = attn_std * (2 * len(self.resblocks)) ** -0.5
        fc_std = (2 * self.width) ** -0.5
        for block in self.resblocks:
            nn.init.normal_(block.attn.in_proj_weight, std=attn_std)
            nn.init.zeros_(block.attn.in_proj_bias)
            nn.init.normal_(block.attn.out_proj.weight, std=proj_std)
            nn.init.zeros_(block.attn.out_proj.bias)
            nn.init.normal_(block.mlp.c_fc.weight, std=fc_std)
            nn.init.normal_(block.mlp.c_proj.weight, std=proj_std)
