"""CLIP: an image tower and a text tower projected into one space, compared by a scaled cosine similarity."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from clipmodule.errors import ClipModuleError
from clipmodule.models.config import CLIPConfig
from clipmodule.models.transformer import LayerNorm, Transformer
from clipmodule.models.vision import build_vision_tower

SCALARS = ("logit_scale", "logit_bias")


def _scalars_saved_0d(module: nn.Module, state_dict: dict, prefix: str, local_metadata: dict) -> None:
    for name in SCALARS:
        value = state_dict.get(prefix + name)
        if value is not None and value.shape == (1,):
            state_dict[prefix + name] = value.reshape(())


def _scalars_loaded_1d(module: nn.Module, state_dict: dict, prefix: str, *args) -> None:
    for name in SCALARS:
        value = state_dict.get(prefix + name)
        if value is not None and value.dim() == 0:
            state_dict[prefix + name] = value.reshape(1)


class CLIP(nn.Module):
    """The paper's model. Text modules sit at the top level, as in OpenAI's release, so state dicts match it."""

    def __init__(self, config: CLIPConfig):
        super().__init__()
        self.config = config
        text = config.text
        self.visual = build_vision_tower(config.vision, config.embed_dim, config.quick_gelu)
        if text.hf_model_name is not None:  # open_clip's HFTextEncoder layout: text.transformer, text.proj
            from clipmodule.models.hf_text import HFTextTower  # transformers is optional: only this tower needs it

            self.text = HFTextTower(text, config.embed_dim)
        else:
            self._build_text_tower(config)
        # FSDP shards no 0-d parameter: the scale and bias are 1-element tensors here, and 0-d in state dicts
        # (as in OpenAI's, open_clip's and HF's), so checkpoints and conversions see no difference.
        self.logit_scale = nn.Parameter(torch.tensor([float(config.init_logit_scale)]))
        self.logit_bias = None
        if config.init_logit_bias is not None:
            self.logit_bias = nn.Parameter(torch.tensor([float(config.init_logit_bias)]))
        self.register_state_dict_post_hook(_scalars_saved_0d)
        self.register_load_state_dict_pre_hook(_scalars_loaded_1d)
        if self.logit_scale.device.type != "meta":  # shapes only (parameter counts): nothing to initialise
            self.init_weights()

    def _build_text_tower(self, config: CLIPConfig) -> None:
        text = config.text
        self.token_embedding = nn.Embedding(text.vocab_size, text.width)
        self.positional_embedding = nn.Parameter(torch.empty(text.context_length, text.width))
        heads = text.width // text.head_width
        self.transformer = Transformer(text.width, text.layers, heads, text.mlp_ratio, config.quick_gelu,
                                       text.ls_init_value, norm_eps=text.norm_eps,
                                       gelu_approximate=text.gelu_approximate)
        self.ln_final = LayerNorm(text.width, eps=text.norm_eps)
        # SigLIP's projection has a bias (an nn.Linear, weight transposed); OpenAI's is a bare matrix; open_clip's
        # proj_type "none" (SigLIP i18n SO400M) has none: the pooled feature is the embedding.
        if text.proj_type == "none":
            if text.width != config.embed_dim:
                raise ClipModuleError(f"text proj_type 'none' needs width == embed_dim ({text.width} vs "
                                      f"{config.embed_dim})")
            self.text_projection = None
        else:
            self.text_projection = nn.Linear(text.width, config.embed_dim) if text.proj_bias else \
                nn.Parameter(torch.empty(text.width, config.embed_dim))

    def init_weights(self) -> None:
        self.visual.init_weights()
        if self.config.text.hf_model_name is not None:
            return  # transformers initialised its tower
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        if isinstance(self.text_projection, nn.Linear):
            nn.init.normal_(self.text_projection.weight, std=self.config.text.width**-0.5)
            nn.init.zeros_(self.text_projection.bias)
        elif self.text_projection is not None:
            nn.init.normal_(self.text_projection, std=self.config.text.width**-0.5)
        self.transformer.init_weights()

    @property
    def dtype(self) -> torch.dtype:
        return self.logit_scale.dtype

    @property
    def context_length(self) -> int:
        """Text tokens the text tower reads: pass it to `tokenize(texts, context_length=...)`."""
        return self.config.text.context_length  # the config, not the parameter's shape: FSDP flattens parameters

    def set_grad_checkpointing(self, enabled: bool = True) -> None:
        """Recompute activations in the backward pass: less memory, about a third more compute."""
        if self.config.text.hf_model_name is not None:
            self.text.transformer.gradient_checkpointing_enable() if enabled else \
                self.text.transformer.gradient_checkpointing_disable()
        else:
            self.transformer.grad_checkpointing = enabled
        if hasattr(self.visual, "transformer"):
            self.visual.transformer.grad_checkpointing = enabled
        else:
            self.visual.grad_checkpointing = enabled

    def encode_image(self, image: torch.Tensor, normalize: bool = False, return_tokens: bool = False):
        """[B, embed_dim] image embeddings; with `return_tokens`, (embeddings, the final patch tokens [B, patches,
        width]) (`models.intermediates.image_tokens`)."""
        if return_tokens:
            from clipmodule.models.intermediates import image_tokens

            features, tokens = image_tokens(self.visual, image.to(self.dtype))
            return (F.normalize(features, dim=-1) if normalize else features), tokens
        features = self.visual(image.to(self.dtype))
        return F.normalize(features, dim=-1) if normalize else features

    def encode_image_dense(self, image: torch.Tensor, normalize: bool = False, vit_path: str = "value") -> torch.Tensor:
        """MaskCLIP's per-patch embeddings in the joint space, [B, embed_dim, h, w] (`models.dense`; `vit_path`:
        "value", the paper's, or "released", MaskCLIP's released backbone)."""
        from clipmodule.models.dense import encode_image_dense

        return encode_image_dense(self, image, normalize=normalize, vit_path=vit_path)

    def forward_intermediates(self, image: torch.Tensor | None = None, text: torch.Tensor | None = None,
                              **options) -> dict:
        """Each block's tokens of either tower and the final features, as open_clip's `forward_intermediates`
        (options and output keys: `clipmodule.models.intermediates`)."""
        from clipmodule.models.intermediates import forward_intermediates

        return forward_intermediates(self, image, text, **options)

    def encode_text(self, text: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        length = text.shape[1]
        if length > self.context_length:  # else a raw shape error from the addition below
            raise ClipModuleError(f"text has {length} tokens but this model reads {self.context_length} tokens: "
                                  f"tokenize(texts, context_length={self.context_length})")
        if self.config.text.hf_model_name is not None:
            x = self.text(text)
            return F.normalize(x, dim=-1) if normalize else x
        text, pooled = self._pooled_tokens(text)
        x = self.token_embedding(text) + self.positional_embedding[: text.shape[1]].to(self.dtype)
        x = self.ln_final(self.transformer(x, causal=self.config.text.causal, pooled=pooled))
        if isinstance(self.text_projection, nn.Linear):
            x = self.text_projection(x)
        elif self.text_projection is not None:
            x = x @ self.text_projection
        return F.normalize(x, dim=-1) if normalize else x

    def cut_padding(self, text: torch.Tensor) -> torch.Tensor:
        """`text` cut after the batch's last end-of-text token where nothing after it can change the features:
        a causal tower pooled at the end-of-text token (the largest id in OpenAI's vocabulary, found by
        argmax). Short captions in a long context are mostly padding. Unchanged for other towers, and while
        tracing or compiling, where the cut length would be baked in."""
        config = self.config.text
        if config.hf_model_name is not None or not config.causal or config.pool != "argmax" or not len(text):
            return text
        if torch.jit.is_tracing() or torch.compiler.is_compiling():
            return text
        return text[:, : int(text.argmax(dim=-1).max()) + 1]

    def _pooled_tokens(self, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(the ids the tower must read, the position pooled in each row)."""
        if self.config.text.pool in ("last", "first"):
            at = text.shape[1] - 1 if self.config.text.pool == "last" else 0
            return text, torch.full((text.shape[0],), at, dtype=torch.long, device=text.device)
        if self.config.text.pool == "eos":  # the first end-of-sequence token (position 0 where there is none)
            return text, (text == self.config.text.eos_id).int().argmax(dim=-1)
        text = self.cut_padding(text)
        return text, text.argmax(dim=-1)

    def forward(self, image: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (logits_per_image [N_img, N_txt], logits_per_text [N_txt, N_img]), as OpenAI's `clip`."""
        image_features = self.encode_image(image, normalize=True)
        text_features = self.encode_text(text, normalize=True)
        logits_per_image = self.logit_scale.exp() * image_features @ text_features.t()
        if self.logit_bias is not None:
            logits_per_image = logits_per_image + self.logit_bias
        return logits_per_image, logits_per_image.t()
