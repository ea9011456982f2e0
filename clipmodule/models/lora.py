"""LoRA (Hu et al. 2106.09685): low-rank adapters on the attention and MLP projections of either tower.

A projection W (out x in) becomes W + (alpha / rank) B A, with A (rank x in) and B (out x rank); only A and B
train, B starts at zero so the adapted model starts as the base model. OpenAI's layout packs q, k and v into one
projection (`attn.in_proj_weight`, 3·width rows; timm's `attn.qkv` likewise), which is why peft cannot adapt
open_clip's towers: here the packed projection carries one adapter per chosen part (q, k and/or v), each writing
its own third of the rows, so "q and v only" means what it means on a model with separate projections.

Adapters live beside the weight they adapt, so a state dict names them by that weight:
`<owner>.lora.*` adapts `<owner>.weight` (an nn.Linear, through a forward hook) and `attn.in_proj_lora.*` adapts
`attn.in_proj_weight`. Each adapter stores its scale and the row blocks it writes (`chunks`) as buffers: a state
dict alone says how to fold it (`merge_lora_state_dict`), with no config beside it.

With `pools` (opt-in: runs before it left them frozen, and resume needs the same adapters), the image tower's
attention-pool head is adapted as a block too: the ResNet's attention pool (`attnpool`: q, k, v, and
its output projection as "out"; a ResNet tower has no other block) and SigLIP's MAP head (timm's latent attention
pool, `attn_pool`: q, its packed k/v written in halves, "out", and its MLP's fc1/fc2).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch
from torch import nn

from clipmodule.errors import ClipModuleError

TARGETS = ("q", "k", "v", "out", "fc1", "fc2")
TOWERS = ("image", "text")
_ADAPTER_KEY = re.compile(r"^(?P<owner>.*?)(?P<stem>(?:\w+_)?)lora\.(?P<field>a|b|chunks|scale)$")


@dataclass(frozen=True)
class LoRAConfig:
    """Low-rank adapters on the transformer blocks of the chosen towers; every other weight is frozen."""

    rank: int = 8
    alpha: float = 16.0
    """The update is scaled by alpha / rank (peft's `lora_alpha`)."""
    dropout: float = 0.0
    """Dropout on the adapter's input (training only), as peft's `lora_dropout`."""
    towers: tuple[str, ...] = TOWERS
    """"image" and/or "text"."""
    targets: tuple[str, ...] = TARGETS
    """Which projections of each block: "q", "k", "v" (attention's query/key/value), "out" (attention's output),
    "fc1", "fc2" (the MLP's two layers)."""
    pools: bool = False
    """Also adapt the image tower's attention-pool head with the same targets: a ResNet's attention pool (its only
    attention), SigLIP's MAP head. Off: they stay frozen, as in runs from before the option."""

    def check(self) -> None:
        if self.rank < 1:
            raise ClipModuleError(f"model.lora.rank must be 1 or more, got {self.rank}")
        if not 0.0 <= self.dropout < 1.0:
            raise ClipModuleError(f"model.lora.dropout must be in [0, 1), got {self.dropout}")
        for name, given, known in (("towers", self.towers, TOWERS), ("targets", self.targets, TARGETS)):
            unknown = [item for item in given if item not in known]
            if unknown or not given:
                raise ClipModuleError(f"model.lora.{name} {list(given)}: choose from {', '.join(known)}")


class LoRA(nn.Module):
    """The update of one projection whose output is `total_chunks` blocks of `chunk` rows; the adapter writes the
    blocks in `chunks` (each with its own A and B) and leaves the others at zero."""

    def __init__(self, in_features: int, chunk: int, total_chunks: int, chunks: list[int], rank: int,
                 alpha: float, dropout: float = 0.0):
        super().__init__()
        self.total_chunks = total_chunks
        self.scatter = list(chunks) != list(range(total_chunks))  # some blocks stay zero
        self.a = nn.Parameter(torch.empty(len(chunks), rank, in_features))
        self.b = nn.Parameter(torch.zeros(len(chunks), chunk, rank))
        self.register_buffer("chunks", torch.tensor(chunks, dtype=torch.long))
        self.register_buffer("scale", torch.tensor(alpha / rank))
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        for part in self.a:  # peft's (and nn.Linear's) init of A
            nn.init.kaiming_uniform_(part, a=math.sqrt(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        low = torch.einsum("...i,pri->...pr", self.dropout(x), self.a.to(x.dtype))
        update = torch.einsum("...pr,pcr->...pc", low, self.b.to(x.dtype)) * self.scale.to(x.dtype)
        if self.scatter:
            blocks = update.new_zeros(*update.shape[:-2], self.total_chunks, update.shape[-1])
            update = blocks.index_copy(-2, self.chunks, update)
        return update.flatten(-2)


def lora_delta(a: torch.Tensor, b: torch.Tensor, chunks: torch.Tensor, scale: torch.Tensor,
               total_chunks: int) -> torch.Tensor:
    """The update of an adapted weight, scale · B A per chosen block of rows, (total_chunks · chunk) x in, fp32."""
    blocks = torch.zeros(total_chunks, b.shape[1], a.shape[2], dtype=torch.float32, device=a.device)
    blocks[chunks.long()] = torch.bmm(b.float(), a.float()) * scale.float()
    return blocks.flatten(0, 1)


def _add_adapter(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
    """Forward hook of an adapted nn.Linear (a module-level function: the model deep-copies and pickles)."""
    return output + module.lora(args[0])


def _bert_projections(layer: nn.Module) -> dict[str, tuple[nn.Module, str, nn.Module | None]] | None:
    """A transformers BERT-family layer (XLM-R, open_clip's HF text towers): separate query, key and value."""
    names = ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
             "intermediate.dense", "output.dense")
    try:
        linears = [layer.get_submodule(name) for name in names]
    except AttributeError:
        return None
    if not all(isinstance(linear, nn.Linear) for linear in linears):
        return None
    return {target: (layer, "linear", linear) for target, linear in zip(("q", "k", "v", "out", "fc1", "fc2"),
                                                                         linears)}


def _block_projections(block: nn.Module) -> dict[str, tuple[nn.Module, str, nn.Module | None]] | None:
    """{target group: (owner, kind, linear)} of one transformer block: ours (packed in_proj, out_proj, c_fc,
    c_proj), timm's (attn.qkv, attn.proj, mlp.fc1, mlp.fc2) or a BERT-family layer's (separate q, k, v); None
    for any other module. "qkv" is a packed projection, written in thirds."""
    attn, mlp = getattr(block, "attn", None), getattr(block, "mlp", None)
    if attn is None or mlp is None:
        return _bert_projections(block)
    if hasattr(attn, "in_proj_weight") and hasattr(attn, "in_proj_lora"):
        return {"qkv": (attn, "packed", None), "out": (attn, "linear", attn.out_proj),
                "fc1": (mlp, "linear", mlp.c_fc), "fc2": (mlp, "linear", mlp.c_proj)}
    if all(isinstance(getattr(owner, name, None), nn.Linear)
           for owner, name in ((attn, "qkv"), (attn, "proj"), (mlp, "fc1"), (mlp, "fc2"))):
        return {"qkv": (attn, "linear", attn.qkv), "out": (attn, "linear", attn.proj),
                "fc1": (mlp, "linear", mlp.fc1), "fc2": (mlp, "linear", mlp.fc2)}
    return None


def _pool_projections(module: nn.Module) -> dict[str, tuple[nn.Module, str, nn.Module | None]] | None:
    """{target group: (owner, kind, linear)} of an image tower's attention-pool head: the ResNet's attention pool
    (separate q_proj, k_proj, v_proj; c_proj as "out") or timm's latent attention pool, SigLIP's MAP head (q, the
    packed kv written in halves as "kv", proj as "out", mlp.fc1/fc2); None for any other module."""
    names = ("q_proj", "k_proj", "v_proj", "c_proj")
    if all(isinstance(getattr(module, name, None), nn.Linear) for name in names):
        return {target: (module, "linear", getattr(module, name)) for target, name in zip(("q", "k", "v", "out"),
                                                                                          names)}
    if not all(isinstance(getattr(module, name, None), nn.Linear) for name in ("q", "kv", "proj")):
        return None
    found = {"q": (module, "linear", module.q), "kv": (module, "linear", module.kv),
             "out": (module, "linear", module.proj)}
    mlp = getattr(module, "mlp", None)
    if all(isinstance(getattr(mlp, name, None), nn.Linear) for name in ("fc1", "fc2")):
        found.update(fc1=(mlp, "linear", mlp.fc1), fc2=(mlp, "linear", mlp.fc2))
    return found


def _tower_blocks(model: nn.Module, tower: str,
                  pools: bool) -> list[dict[str, tuple[nn.Module, str, nn.Module | None]]]:
    if tower == "image":
        root, name = model.visual, "the image tower"
    else:  # ours, or a Hugging Face tower (open_clip's HFTextEncoder layout: text.transformer)
        hf = getattr(model, "text", None)
        root, name = (model.transformer, "the text tower") if hf is None else (hf.transformer, "the text tower")
    blocks = [found for module in root.modules()
              if (found := _block_projections(module) or (_pool_projections(module) if pools and tower == "image"
                                                          else None))]
    if not blocks:
        pool = " or set model.lora.pools: true (its attention pool)" if tower == "image" and not pools else ""
        raise ClipModuleError(f"model.lora: {name} ({type(root).__name__}) has no transformer blocks to adapt; "
                              f"leave {tower!r} out of model.lora.towers{pool}")
    return blocks


def _adapt(owner: nn.Module, kind: str, linear: nn.Module | None, chunks: list[int], total: int,
           config: LoRAConfig) -> None:
    """Adapters writing `chunks` of a projection whose rows are `total` blocks (3 for q/k/v, else 1)."""
    options = dict(rank=config.rank, alpha=config.alpha, dropout=config.dropout)
    if kind == "packed":
        out_features, in_features = owner.in_proj_weight.shape
        owner.in_proj_lora = LoRA(in_features, out_features // total, total, chunks,
                                  **options).to(owner.in_proj_weight.device)
        return
    linear.add_module("lora", LoRA(linear.in_features, linear.out_features // total, total, chunks,
                                   **options).to(linear.weight.device))
    linear.register_forward_hook(_add_adapter)


def apply_lora(model: nn.Module, config: LoRAConfig) -> int:
    """Freezes every weight of `model` and adds trainable adapters to the chosen projections of the chosen towers;
    returns how many projections were adapted. A model that already has adapters is refused."""
    config.check()
    if has_adapters(model.state_dict()):
        raise ClipModuleError("model.lora: the model already has LoRA adapters (merge them first: clipmodule "
                              "convert --merge_lora)")
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    parts = [index for index, name in enumerate("qkv") if name in config.targets]
    halves = [index for index, name in enumerate("kv") if name in config.targets]  # a MAP head's packed k, v
    count = 0
    for tower in config.towers:
        adapted = 0
        for block in _tower_blocks(model, tower, config.pools):
            chosen = [(key, chunks, total) for key, chunks, total in (("qkv", parts, 3), ("kv", halves, 2))
                      if chunks and key in block] + [(target, [0], 1) for target in config.targets if target in block]
            for key, chunks, total in chosen:
                _adapt(*block[key], chunks, total, config)
            adapted += len(chosen)
        if not adapted:  # e.g. a ResNet tower (its attention pool only) asked for fc1/fc2
            raise ClipModuleError(f"model.lora: the {tower} tower has none of {list(config.targets)} to adapt; "
                                  f"choose other targets or leave {tower!r} out of model.lora.towers")
        count += adapted
    return count


def has_adapters(state_dict: dict[str, torch.Tensor]) -> bool:
    return any(_ADAPTER_KEY.match(key) for key in state_dict)


def merge_lora_state_dict(state_dict: dict[str, torch.Tensor], source: str = "state dict") -> dict[str, torch.Tensor]:
    """The weights with every adapter folded into the weight it adapts (W + scale · B A, in fp32, cast back) and
    the adapter entries removed: the plain model's state dict. An adapter without its weight or one of its four
    entries is refused by name."""
    adapters: dict[str, dict[str, torch.Tensor]] = {}
    merged = {}
    for key, value in state_dict.items():
        match = _ADAPTER_KEY.match(key)
        if match:
            target = f"{match['owner']}{match['stem']}weight"
            adapters.setdefault(target, {})[match["field"]] = value
        else:
            merged[key] = value
    for target, fields in adapters.items():
        missing = [field for field in ("a", "b", "chunks", "scale") if field not in fields]
        if missing or target not in merged:
            what = f"lacks {', '.join(missing)}" if missing else f"adapts {target}, which the weights lack"
            raise ClipModuleError(f"{source}: the LoRA adapter of {target} {what}")
        weight = merged[target]
        if weight.shape[0] % fields["b"].shape[1] or weight.shape[1] != fields["a"].shape[2]:
            raise ClipModuleError(f"{source}: the LoRA adapter of {target} does not fit its shape "
                                  f"{tuple(weight.shape)}")
        delta = lora_delta(fields["a"], fields["b"], fields["chunks"], fields["scale"],
                           weight.shape[0] // fields["b"].shape[1])
        merged[target] = (weight.float() + delta.to(weight.device)).to(weight.dtype)
    return merged


def merged_model(model: nn.Module) -> nn.Module:
    """A plain copy of an adapted CLIP model (a new `CLIP` of the same config) with the adapters folded in."""
    from clipmodule.models.clip import CLIP

    plain = CLIP(model.config).to(next(model.parameters()).device)
    plain.load_state_dict(merge_lora_state_dict(model.state_dict()), strict=True)
    for name in ("preprocess_cfg", "tokenizer_folder"):
        if hasattr(model, name):
            setattr(plain, name, getattr(model, name))
    return plain.train(model.training)
