"""A Hugging Face text tower (XLM-R for multilingual CLIP, mT5's encoder, ...), laid out as open_clip's HFTextEncoder.

`text.transformer.*` is transformers' model, `text.proj` the projection, so open_clip's state dicts load
unchanged. The architecture comes from the model's config.json, read locally only (a folder, or the Hugging
Face cache for a hub name): weights are never downloaded and the tower is built from the config.
"""

from __future__ import annotations

import torch
from torch import nn

from clipmodule.errors import ClipModuleError
from clipmodule.models.config import TextConfig

POOLERS = ("mean_pooler", "cls_pooler")


def _hf_config(name: str):
    try:
        from transformers import AutoConfig
    except ImportError:
        raise ClipModuleError(f"the text tower {name!r} is built by transformers: pip install transformers") from None
    try:
        return AutoConfig.from_pretrained(name, local_files_only=True)
    except (OSError, ValueError) as error:
        raise ClipModuleError(f"text tower {name!r}: no local config.json (a folder, or the Hugging Face cache; "
                              f"nothing is downloaded): {str(error).splitlines()[0][:120]}") from None


class HFTextTower(nn.Module):
    def __init__(self, config: TextConfig, output_dim: int):
        super().__init__()
        from transformers import AutoModel

        if config.hf_pooler not in POOLERS:
            raise ClipModuleError(f"hf_pooler_type {config.hf_pooler!r} is not one of {', '.join(POOLERS)}")
        self.hf_config = _hf_config(config.hf_model_name)
        self.pooler = config.hf_pooler
        if getattr(self.hf_config, "is_encoder_decoder", False):
            self.transformer = AutoModel.from_config(self.hf_config).encoder
        else:
            self.transformer = AutoModel.from_config(self.hf_config, add_pooling_layer=self.pooler == "cls_pooler")
        width = self.hf_config.hidden_size if hasattr(self.hf_config, "hidden_size") else self.hf_config.d_model
        if config.hf_proj == "linear":
            self.proj = nn.Linear(width, output_dim, bias=False)
        elif config.hf_proj == "mlp":
            hidden = (width + output_dim) // 2
            self.proj = nn.Sequential(nn.Linear(width, hidden, bias=False), nn.GELU(),
                                      nn.Linear(hidden, output_dim, bias=False))
        elif config.hf_proj == "" and width == output_dim:
            self.proj = nn.Identity()
        else:
            raise ClipModuleError(f"hf_proj_type {config.hf_proj!r} cannot map width {width} to {output_dim}")

    def forward(self, text: torch.Tensor) -> torch.Tensor:
        mask = (text != self.hf_config.pad_token_id).long()
        out = self.transformer(input_ids=text, attention_mask=mask)
        if self.pooler == "cls_pooler":
            pooler_output = getattr(out, "pooler_output", None)
            pooled = pooler_output if pooler_output is not None else out.last_hidden_state[:, 0]
        else:  # the mean over real (non-pad) tokens
            pooled = (out.last_hidden_state * mask.unsqueeze(-1)).sum(dim=1) / mask.sum(-1, keepdim=True)
        return self.proj(pooled)
