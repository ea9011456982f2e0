"""Layer-wise learning-rate decay (`model.optim.layer_decay`): timm's grouping of a ViT for a timm tower and for
the built-in ViT, ResNet stages and the text tower, the weight decay rule kept, the groups listed."""

from __future__ import annotations

import re

import pytest
import timm
import torch
import yaml
from timm.optim._param_groups import param_groups_layer_decay

from clipmodule.models import create_model
from clipmodule.train.layer_decay import describe_groups, layer_decay_groups, layers_of
from clipmodule.train.optim import OptimConfig, build_optimizer, parameter_groups
from tests.clipmodule.train.test_cli import TINY

DECAY = 0.6


def _timm_vit() -> torch.nn.Module:
    return timm.create_model("vit_tiny_patch16_224", depth=2, embed_dim=32, num_heads=2, img_size=32, pre_norm=True,
                             num_classes=8)


def _timm_scales(model: torch.nn.Module) -> dict[str, float]:
    names = {id(parameter): name for name, parameter in model.named_parameters()}
    return {names[id(parameter)]: group["lr_scale"]
            for group in param_groups_layer_decay(model, 0.1, layer_decay=DECAY) for parameter in group["params"]}


def test_a_timm_tower_gets_timms_own_groups():
    holder = torch.nn.Module()
    holder.visual = torch.nn.Module()
    holder.visual.trunk = _timm_vit()  # as clipmodule.models.timm_tower.TimmTower with timm's own classifier
    holder.visual.head = torch.nn.Sequential()
    theirs = _timm_scales(holder.visual.trunk)
    ours = {name[len("visual.trunk."):]: where.scale(DECAY) for name, where in layers_of(holder).items()}
    assert ours == pytest.approx(theirs, rel=1e-12)


# the built-in ViT's names for timm's: the same layers under other names
_TIMM_NAME = [(r"^class_embedding$", "cls_token"), (r"^positional_embedding$", "pos_embed"),
              (r"^conv1\.weight$", "patch_embed.proj.weight"), (r"^ln_pre\.", "norm_pre.weight"),
              (r"^transformer\.resblocks\.(\d+)\..*", r"blocks.\1.norm1.weight"), (r"^ln_post\.", "norm.weight"),
              (r"^proj$", "head.weight")]


def _timm_name(name: str) -> str:
    for pattern, replacement in _TIMM_NAME:
        if re.match(pattern, name):
            return re.sub(pattern, replacement, name) if "\\1" in replacement else replacement
    raise AssertionError(name)


def test_the_built_in_vit_is_numbered_as_timm_numbers_its_vit():
    model = create_model("tiny-vit", text={"vocab_size": 500})
    theirs = _timm_scales(_timm_vit())
    layers = layers_of(model)
    for name, where in layers.items():
        if name.startswith("visual."):
            assert where.scale(DECAY) == pytest.approx(theirs[_timm_name(name[len("visual."):])]), name
    # the text tower: embeddings, blocks, final norm with the last block, projection at lr; each tower its own depth
    assert layers["token_embedding.weight"].scale(DECAY) == pytest.approx(DECAY ** 3)
    assert layers["transformer.resblocks.0.attn.in_proj_weight"].scale(DECAY) == pytest.approx(DECAY ** 2)
    assert layers["ln_final.weight"].scale(DECAY) == layers["transformer.resblocks.1.ln_1.weight"].scale(DECAY)
    assert layers["text_projection"].scale(DECAY) == layers["logit_scale"].scale(DECAY) == 1.0


def test_resnet_stages_are_the_layers_of_a_resnet_tower():
    model = create_model("RN50", text={"vocab_size": 500, "layers": 2})
    layers = layers_of(model)
    assert layers["visual.conv1.weight"].layer == layers["visual.bn3.bias"].layer == 0
    assert [layers[f"visual.layer{stage}.0.conv1.weight"].layer for stage in (1, 2, 3, 4)] == [1, 2, 3, 4]
    assert layers["visual.attnpool.c_proj.weight"].layer == layers["visual.attnpool.c_proj.weight"].head == 5


def test_the_groups_keep_the_weight_decay_rule_and_scale_the_learning_rate():
    model = create_model("tiny-vit", text={"vocab_size": 500})
    groups = layer_decay_groups(model, 1e-3, 0.2, DECAY)
    plain_decayed = {id(p) for p in parameter_groups(model, 0.2)[0]["params"]}
    assert {id(p) for g in groups if g["weight_decay"] for p in g["params"]} == plain_decayed
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    optimizer, schedule = build_optimizer(model, OptimConfig(lr=1e-3, layer_decay=DECAY, warmup_steps=1), 10)
    lrs = {group["name"]: lr for group, lr in zip(optimizer.param_groups, schedule.get_last_lr())}
    assert lrs["visual.3"] == pytest.approx(1e-3) and lrs["visual.0"] == pytest.approx(1e-3 * DECAY ** 3)
    listing = describe_groups(model, OptimConfig(lr=1e-3, layer_decay=DECAY))
    assert list(listing)[:2] == ["visual.0", "visual.0.no_decay"]
    assert listing["text.0"]["params"] == ["positional_embedding", "token_embedding.weight"]


@pytest.mark.slow
def test_fit_lists_the_groups_with_print_param_groups(capsys):
    from clipmodule.train.cli import fit

    assert fit([*TINY, "--model.optim.layer_decay", "0.5", "--print_param_groups"]) == 0
    listing = yaml.safe_load(capsys.readouterr().out)
    assert listing["visual.3"]["lr_scale"] == 1.0 and listing["visual.0"]["lr_scale"] == 0.125
    assert listing["logit.0.no_decay"]["params"] == ["logit_scale"]
