"""Layer-wise learning-rate decay (BEiT; timm's `param_groups_layer_decay`) for both towers of a CLIP.

Each tower is numbered as timm numbers a ViT: the stem (patch or token embedding, class and position embeddings,
the pre-norm, a ResNet's first convolutions) is layer 0, block (or ResNet stage) i is layer i + 1, the final norm
shares the last block's layer, and the projection (and anything else after the blocks) is the head, layer L + 1.
A parameter of layer l trains at lr * decay ** (L + 1 - l), so the head at lr and the stem at lr * decay ** (L + 1);
each tower counts its own L. The logit scale and bias train at lr. A timm image tower is numbered by timm's own
`group_matcher` (so its groups are timm's), its projection head after it. Weight decay keeps its rule
(`clipmodule.train.optim.decays`): each layer splits into a decayed and an exempt group.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from torch import nn

from clipmodule.errors import ClipModuleError
from clipmodule.train.decay_rule import decays, matrix_names, parameter_groups

BLOCK = re.compile(r"(?:^|\.)(?:resblocks|blocks|layers|layer|h)\.(\d+)\.")
STAGE = re.compile(r"^layer(\d+)\.")  # a ResNet's stages layer1..layer4
HEAD = re.compile(r"^(?:text_projection|proj|attnpool|head)(?:\.|$)")
FINAL_NORM = re.compile(r"^(?:ln_post|ln_final)\.")


@dataclass(frozen=True)
class LayerOf:
    """Where a parameter sits: its tower ("visual", "text" or "logit"), its layer and the tower's head layer."""

    tower: str
    layer: int
    head: int

    def scale(self, decay: float) -> float:
        return decay ** (self.head - self.layer)


def _tower_of(name: str) -> tuple[str, str]:
    """(tower, the name within it) of a CLIP parameter."""
    if name.startswith("logit_"):
        return "logit", name
    if name.startswith("visual."):
        return "visual", name[len("visual."):]
    return "text", name[len("text."):] if name.startswith("text.") else name


def _numbered(names: list[str]) -> dict[str, int]:
    """Layers of one tower's parameter names (in registration order), by the rules of the module docstring."""
    blocks = {}
    for name in names:
        match = STAGE.match(name) or BLOCK.search(name)
        if match:
            blocks[name] = int(match.group(1)) + (0 if match.re is STAGE else 1)
    depth = max(blocks.values(), default=0)
    first = min((names.index(name) for name in blocks), default=len(names))
    layers = {}
    for index, name in enumerate(names):
        if name in blocks:
            layers[name] = blocks[name]
        elif HEAD.match(name):
            layers[name] = depth + 1
        elif FINAL_NORM.match(name):
            layers[name] = depth
        else:
            layers[name] = 0 if index < first else depth + 1
    return layers


def _timm_numbered(tower: nn.Module, names: list[str]) -> dict[str, int] | None:
    """A timm trunk's layers by timm's own `group_matcher` (None when the tower is not one)."""
    trunk = getattr(tower, "trunk", None)
    if trunk is None or not hasattr(trunk, "group_matcher"):
        return None
    from timm.models import group_parameters

    trunk_layers = group_parameters(trunk, trunk.group_matcher(coarse=False), reverse=True)
    head = max(trunk_layers.values(), default=0) + 1
    return {name: trunk_layers.get(name[len("trunk."):], head) if name.startswith("trunk.") else head
            for name in names}


def layers_of(model: nn.Module) -> dict[str, LayerOf]:
    """Every parameter's `LayerOf`, by name (the model's own names)."""
    towers: dict[str, list[str]] = {"visual": [], "text": [], "logit": []}
    full_names: dict[tuple[str, str], str] = {}
    for name, _ in model.named_parameters():
        tower, inner = _tower_of(name)
        towers[tower].append(inner)
        full_names[tower, inner] = name
    result = {}
    for tower, names in towers.items():
        if tower == "logit":
            numbered = dict.fromkeys(names, 0)
        else:
            visual = getattr(model, "visual", None) if tower == "visual" else None
            numbered = (_timm_numbered(visual, names) if visual is not None else None) or _numbered(names)
        head = max(numbered.values(), default=0)
        for name, layer in numbered.items():
            result[full_names[tower, name]] = LayerOf(tower, layer, head)
    return result


def layer_decay_groups(model: nn.Module, lr: float, weight_decay: float, decay: float,
                       matrices: frozenset[str] | None = None) -> list[dict[str, Any]]:
    """Optimiser groups, one per (tower, layer, weight decay or not), each with its `lr` (lr times its
    `lr_scale`) and a `name` (`visual.3`, `text.0.no_decay`, ...) that the learning-rate monitor logs under."""
    if not 0 < decay <= 1:
        raise ClipModuleError(f"model.optim.layer_decay must be in (0, 1], got {decay}")
    matrices = matrix_names(model) if matrices is None else matrices
    layers = layers_of(model)
    groups: dict[str, dict[str, Any]] = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        where, decayed = layers[name], decays(name, matrices)
        key = f"{where.tower}.{where.layer}" + ("" if decayed else ".no_decay")
        scale = where.scale(decay)
        group = groups.setdefault(key, {"params": [], "weight_decay": weight_decay if decayed else 0.0,
                                        "lr": lr * scale, "lr_scale": scale, "name": key})
        group["params"].append(parameter)
    return list(groups.values())


def describe_groups(model: nn.Module, optim: Any, matrices: frozenset[str] | None = None) -> dict[str, Any]:
    """The optimiser's parameter groups as `--print_config`-style data: per group its lr, lr scale, weight decay
    and parameter names, as `build_optimizer` makes them (`clipmodule fit ... --print_param_groups`)."""
    if optim.layer_decay is not None:
        groups = layer_decay_groups(model, optim.lr, optim.weight_decay, optim.layer_decay, matrices)
    else:
        groups = parameter_groups(model, optim.weight_decay, matrices)
        for group, name in zip(groups, ("decay", "no_decay")):
            group.update(name=name, lr=optim.lr, lr_scale=1.0)
    names = {id(parameter): name for name, parameter in model.named_parameters()}
    order = {"visual": 0, "text": 1, "logit": 2}

    def position(group: dict[str, Any]) -> tuple:
        parts = group["name"].split(".")
        return (order.get(parts[0], -1), int(parts[1]) if len(parts) > 1 else 0, group["name"])

    groups = sorted(groups, key=position)
    return {group["name"]: {"lr": group["lr"], "lr_scale": group["lr_scale"], "weight_decay": group["weight_decay"],
                            "params": [names[id(parameter)] for parameter in group["params"]]}
            for group in groups if group["params"]}
