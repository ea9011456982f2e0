"""Tower locking (LiT, Zhai et al. 2111.07991, and its relatives): freeze the image tower, the text tower or both,
leaving the last N groups trainable, as open_clip's `lock_image_tower` / `lock_text_tower` count them.

Groups, from the input end (unlocking N leaves the last N trainable):
- ViT: [conv1, class and positional embedding, ln_pre], each block but the last, [last block, ln_post], [proj]
- ModifiedResNet: [the three-conv stem], layer1, layer2, layer3, layer4, [attnpool]  (the last N stages)
- our text tower: [token and positional embedding], each block but the last, [last block, ln_final], [projection]
- an HF text tower: [embeddings], each layer (open_clip's `HFTextEncoder.lock`): only transformers' model is ever
  locked, so the projection (and a pooler after the layers) always trains; 0 locks transformers' model whole
A timm image tower is locked whole only (its groups are timm's to define).

Locked parameters get `requires_grad=False`, so the optimiser never holds them (`optim.parameter_groups`) and they
stay bit-identical. A tower locked whole runs in eval mode (no dropout, BatchNorm uses and keeps its running
statistics) and under `torch.no_grad` (a forward pre-hook), and stays in eval mode when Lightning calls `train()`
(`ClipLitModule.train` re-applies `keep_in_eval`); so does an HF tower's transformers model locked whole (open_clip
keeps its dropout on: here the locked features do not change from step to step).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from clipmodule.errors import ClipModuleError

Group = list  # of nn.Module and nn.Parameter


@dataclass(frozen=True)
class LockConfig:
    """Which parts of the model train. Locked parameters are left out of the optimiser and never change."""

    lock_image: bool = False
    """Freeze the image tower (LiT: a pretrained image tower, a text tower that learns to match it)."""
    image_unlocked_groups: int = 0
    """With lock_image: the last N groups stay trainable (ViT: 1 = proj, 2 = also the last block and ln_post;
    ResNet: 1 = attnpool, 2 = also layer4, ...). 0: the whole tower is locked, runs in eval mode and no-grad."""
    image_freeze_bn_stats: bool = False
    """With lock_image (ResNets): the BatchNorm layers of the locked groups stay in eval mode, so they normalise
    with, and no longer update, their running statistics. A tower locked whole always does."""
    lock_text: bool = False
    """Freeze the text tower (ours or a Hugging Face one)."""
    text_unlocked_layers: int = 0
    """With lock_text: the last N groups stay trainable (our tower: 1 = the projection, 2 = also the last block and
    the final norm, ...; an HF tower: 1 = the last layer, 2 = the last two, ..., its projection always trains, as
    open_clip's `HFTextEncoder.lock` counts). 0: the whole tower (an HF tower: transformers' model) is locked, runs
    in eval mode and no-grad."""
    freeze_layer_norm: bool = True
    """Text tower: LayerNorm gains and biases of the locked groups are locked too; false leaves them trainable
    (open_clip's `--lock-text-freeze-layer-norm`, on an HF tower the parameters under a `LayerNorm` module), so a
    tower locked whole then still trains its norms. The image tower's norms lock with their groups, as open_clip's."""


def vision_groups(visual: nn.Module) -> list[Group]:
    """The image tower's lockable groups, input end first (see the module docstring)."""
    if hasattr(visual, "transformer") and hasattr(visual, "proj"):  # VisionTransformer
        blocks = list(visual.transformer.resblocks)
        return [[visual.conv1, visual.class_embedding, visual.positional_embedding, visual.ln_pre],
                *([block] for block in blocks[:-1]), [blocks[-1], visual.ln_post], [visual.proj]]
    if hasattr(visual, "attnpool"):  # ModifiedResNet
        stem = [visual.conv1, visual.bn1, visual.conv2, visual.bn2, visual.conv3, visual.bn3]
        return [stem, [visual.layer1], [visual.layer2], [visual.layer3], [visual.layer4], [visual.attnpool]]
    return [[visual]]  # timm: one group


def hf_text_groups(hf: nn.Module) -> list[nn.Module] | None:
    """An HF text tower's lockable groups, [embeddings, each layer] (open_clip's), or None where they are unknown."""
    encoder = getattr(hf, "encoder", hf)
    layers = getattr(encoder, "layer", None) or getattr(encoder, "block", None) or getattr(encoder, "layers", None)
    embeddings = getattr(hf, "embeddings", None) or getattr(hf, "embed_tokens", None)
    return None if layers is None or embeddings is None else [embeddings, *layers]


def text_groups(model: nn.Module) -> list[Group]:
    """Our text tower's lockable groups, input end first (see the module docstring)."""
    blocks = list(model.transformer.resblocks)
    return [[model.token_embedding, model.positional_embedding], *([block] for block in blocks[:-1]),
            [blocks[-1], model.ln_final], [model.text_projection]]


def text_modules(model: nn.Module) -> list[nn.Module]:
    """The modules our text tower's forward runs (it sits at the model's top level)."""
    modules = [model.token_embedding, model.transformer, model.ln_final]
    return modules + ([model.text_projection] if isinstance(model.text_projection, nn.Module) else [])


def _parameters(group: Group) -> Iterable[tuple[nn.Module | None, nn.Parameter]]:
    """(owning module, parameter) for every parameter of a group; a bare parameter has no module."""
    for item in group:
        if isinstance(item, nn.Parameter):
            yield None, item
        else:
            for module in item.modules():
                for parameter in module.parameters(recurse=False):
                    yield module, parameter


def _is_layer_norm(module: nn.Module | None) -> bool:
    return module is not None and (isinstance(module, nn.LayerNorm) or "LayerNorm" in type(module).__name__)


def _batch_norms(groups: list[Group]) -> list[nn.Module]:
    return [module for group in groups for item in group if isinstance(item, nn.Module)
            for module in item.modules() if isinstance(module, nn.modules.batchnorm._BatchNorm)]


def _lock_groups(tower: str, groups: list[Group], unlocked: int, freeze_layer_norm: bool, option: str) -> list[Group]:
    """Freezes all but the last `unlocked` groups; returns the locked ones."""
    if unlocked < 0 or unlocked > len(groups):
        raise ClipModuleError(f"lock.{option}={unlocked}: the {tower} tower has {len(groups)} groups "
                              f"(0 locks it whole, {len(groups)} leaves it all trainable)")
    locked = groups[: len(groups) - unlocked]
    for group in locked:
        for module, parameter in _parameters(group):
            parameter.requires_grad_(not freeze_layer_norm and _is_layer_norm(module))
    return locked


def _lock_hf_text(hf: nn.Module, unlocked: int, freeze_layer_norm: bool) -> bool:
    """open_clip's `HFTextEncoder.lock(unlocked, freeze_layer_norm)` on transformers' model `hf` (the projection
    is not in it: it always trains); returns whether `hf` is now locked whole."""
    groups = hf_text_groups(hf)
    if unlocked and groups is None:
        raise ClipModuleError(f"lock.text_unlocked_layers: the {type(hf).__name__} text tower is locked whole only "
                              "(its layers are not found)")
    count = len(groups) if groups is not None else 1
    if unlocked < 0 or unlocked > count:
        raise ClipModuleError(f"lock.text_unlocked_layers={unlocked}: the text tower has embeddings and {count - 1} "
                              f"layers (0 locks it whole, {count} leaves it all trainable; its projection always "
                              "trains, as in open_clip)")
    for module in groups[: count - unlocked] if unlocked else [hf]:
        for name, parameter in module.named_parameters():
            parameter.requires_grad_(not freeze_layer_norm and "LayerNorm" in name.split("."))
    return not any(parameter.requires_grad for parameter in hf.parameters())


def _grad_off(module: nn.Module, args: tuple) -> None:
    module.__dict__.setdefault("_lock_grad_modes", []).append(torch.is_grad_enabled())
    torch.set_grad_enabled(False)


def _grad_back(module: nn.Module, args: tuple, output: object) -> None:
    modes = module.__dict__.get("_lock_grad_modes")
    if modes:
        torch.set_grad_enabled(modes.pop())


def _run_without_grad(modules: list[nn.Module]) -> None:
    """Forward hooks that run these modules under no_grad, and restore the mode after (errors too)."""
    for module in modules:
        module.register_forward_pre_hook(_grad_off)
        module.register_forward_hook(_grad_back, always_call=True)


def apply_lock(model: nn.Module, config: LockConfig) -> list[nn.Module]:
    """Locks `model`'s towers as `config` says; returns the modules that must stay in eval mode (towers locked whole,
    the locked BatchNorms with `image_freeze_bn_stats`): pass them to `keep_in_eval` after every `train()`."""
    keep: list[nn.Module] = []
    if not config.lock_image and (config.image_unlocked_groups or config.image_freeze_bn_stats):
        raise ClipModuleError("lock.image_unlocked_groups / image_freeze_bn_stats need lock.lock_image: true")
    if not config.lock_text and config.text_unlocked_layers:
        raise ClipModuleError("lock.text_unlocked_layers needs lock.lock_text: true")
    if config.lock_image:
        groups = vision_groups(model.visual)
        if len(groups) == 1 and config.image_unlocked_groups:
            raise ClipModuleError(f"lock.image_unlocked_groups: the {type(model.visual).__name__} image tower is "
                                  "locked whole only (its layer groups are timm's)")
        locked = _lock_groups("image", groups, config.image_unlocked_groups, True, "image_unlocked_groups")
        if not any(p.requires_grad for p in model.visual.parameters()):
            keep.append(model.visual)
            _run_without_grad([model.visual])
        elif config.image_freeze_bn_stats:
            keep += _batch_norms(locked)
    if config.lock_text and getattr(model, "text", None) is not None:  # HFTextTower: transformers' model + proj
        if _lock_hf_text(model.text.transformer, config.text_unlocked_layers, config.freeze_layer_norm):
            keep.append(model.text.transformer)
            _run_without_grad([model.text.transformer])
    elif config.lock_text:
        groups = text_groups(model)
        _lock_groups("text", groups, config.text_unlocked_layers, config.freeze_layer_norm, "text_unlocked_layers")
        if not any(parameter.requires_grad for group in groups for _, parameter in _parameters(group)):
            modules = text_modules(model)
            keep += modules
            _run_without_grad(modules)
    keep_in_eval(keep)
    return keep


def keep_in_eval(modules: list[nn.Module]) -> None:
    for module in modules:
        module.eval()


def lock_summary(model: nn.Module) -> dict[str, int]:
    """Trainable and locked parameter counts (elements), for the log and the tests."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"trainable": trainable, "locked": sum(p.numel() for p in model.parameters()) - trainable}
