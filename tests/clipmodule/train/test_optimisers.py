"""Optimisers by name (AdamW, LAMB, Lion, timm's registry) and open_clip's schedules, against the peers' own code."""

from __future__ import annotations

import pytest
import torch
from open_clip_train.scheduler import const_lr, const_lr_cooldown, cosine_lr

from clipmodule.errors import ClipModuleError
from clipmodule.train.module import ClipLitModule, build_network
from clipmodule.train.optim import OptimConfig, build_optimizer


class _Holder:
    param_groups = [{"lr": 0.0}]


def _open_clip_lrs(adjuster, steps: int) -> list[float]:
    return [adjuster(step) for step in range(steps)]


def _our_lrs(optim: OptimConfig, steps: int) -> list[float]:
    _, schedule = build_optimizer(torch.nn.Linear(2, 2), optim, steps)
    lrs = []
    for _ in range(steps):
        lrs.append(schedule.get_last_lr()[0])
        schedule.optimizer.step()
        schedule.step()
    return lrs


@pytest.mark.parametrize("schedule", ["cosine", "const", "const-cooldown"])
def test_schedules_equal_open_clips(schedule):
    lr, warmup, steps = 1e-3, 5, 40
    cooldown = {"cooldown_steps": 12, "cooldown_power": 2.0, "cooldown_end_ratio": 0.1}  # const-cooldown's only
    optim = OptimConfig(lr=lr, warmup_steps=warmup, schedule=schedule, weight_decay=0.0,
                        **(cooldown if schedule == "const-cooldown" else {}))
    holder = _Holder()
    peers = {"cosine": lambda: cosine_lr(holder, lr, warmup, steps),
             "const": lambda: const_lr(holder, lr, warmup, steps),
             "const-cooldown": lambda: const_lr_cooldown(holder, lr, warmup, steps, 12, 2.0, lr * 0.1)}
    theirs = _open_clip_lrs(peers[schedule](), steps)
    ours = _our_lrs(optim, steps)
    assert ours == pytest.approx(theirs, rel=1e-9, abs=1e-12)


def test_a_cooldown_longer_than_the_run_is_refused():
    with pytest.raises(ClipModuleError, match="cooldown_steps"):
        build_optimizer(torch.nn.Linear(2, 2), OptimConfig(schedule="const-cooldown", cooldown_steps=50,
                                                           warmup_steps=1), 20)


@pytest.mark.parametrize(("name", "kind"), [("adamw", "AdamW"), ("lamb", "Lamb"), ("lion", "Lion"),
                                            ("timm/sgd", "SGD"), ("timm/adafactor", "Adafactor")])
def test_optimisers_by_name_train_with_the_weight_decay_rule(name, kind):
    torch.manual_seed(0)
    network = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.LayerNorm(8), torch.nn.Linear(8, 2))
    options = {"momentum": 0.9} if name == "timm/sgd" else {}
    optimizer, _ = build_optimizer(network, OptimConfig(name=name, lr=1e-2, warmup_steps=1, kwargs=options), 10)
    assert type(optimizer).__name__ == kind
    decayed, exempt = optimizer.param_groups
    assert (decayed["weight_decay"], len(decayed["params"]), exempt["weight_decay"]) == (0.2, 2, 0.0)
    before = network[0].weight.detach().clone()
    network(torch.randn(4, 8)).square().mean().backward()
    optimizer.step()
    assert not torch.equal(before, network[0].weight)


def test_unknown_optimisers_and_schedules_are_one_line_errors():
    network = torch.nn.Linear(2, 2)
    with pytest.raises(ClipModuleError, match="model.optim.name='sgdd' is not one of adamw, lamb, lion"):
        build_optimizer(network, OptimConfig(name="sgdd"), 10)
    with pytest.raises(ClipModuleError, match="timm has no optimiser 'nope'"):
        build_optimizer(network, OptimConfig(name="timm/nope"), 10)
    with pytest.raises(ClipModuleError, match="schedule='step'"):
        build_optimizer(network, OptimConfig(schedule="step"), 10)  # type: ignore[arg-type]


@pytest.mark.parametrize(("options", "message"), [
    ({"name": "sgd", "kwargs": {"momentum": 0.9}}, "model.optim.name='sgd' is not one of adamw, lamb, lion or timm/"),
    ({"name": "timm/nope", "kwargs": {"lr": 0.1}}, "timm has no optimiser 'nope'"),
    ({"schedule": "step", "min_lr_ratio": 0.1}, "model.optim.schedule='step' is not one of cosine"),
])
def test_an_unknown_optimiser_or_schedule_is_named_when_the_module_is_built(options, message):
    """Before the options the name would ignore: `name: sgd` with kwargs is an unknown name, not misplaced kwargs."""
    with pytest.raises(ClipModuleError, match=message.replace("(", r"\(")):
        ClipLitModule(build_network("tiny-vit"), optim=OptimConfig(**options))


def test_the_optimiser_and_schedule_are_recorded_with_the_run():
    module = ClipLitModule(build_network("tiny-vit"), optim=OptimConfig(name="lion", schedule="const"))
    assert module.hparams["optim"]["name"] == "lion" and module.hparams["optim"]["schedule"] == "const"


@pytest.mark.parametrize(("options", "message"), [
    ({"name": "lamb", "fused": True}, "fused is torch's AdamW only"),
    ({"name": "lion", "fused": True}, "fused is torch's AdamW only"),
    ({"name": "timm/sgd", "fused": True}, "fused is torch's AdamW only"),
    ({"name": "timm/adamw", "betas": (0.9, 0.95)}, "betas is not passed to a timm/<name> optimiser"),
    ({"name": "timm/adamw", "eps": 1e-8}, "eps is not passed to a timm/<name> optimiser"),
    ({"name": "lion", "eps": 1e-8}, "Lion has no eps"),
    ({"name": "adamw", "kwargs": {"momentum": 0.9}}, "kwargs go to timm/<name> optimisers only; momentum"),
    ({"name": "lamb", "kwargs": {"trust_clip": True}}, "kwargs go to timm/<name> optimisers only"),
    ({"name": "timm/sgd", "kwargs": {"lr": 0.1}}, "kwargs.lr is set by this project; use model.optim.lr"),
    ({"name": "timm/sgd", "kwargs": {"weight_decay": 0}}, "use model.optim.weight_decay"),
    ({"name": "timm/sgd", "kwargs": {"layer_decay": 0.7}}, "use model.optim.layer_decay"),
    ({"name": "timm/sgd", "kwargs": {"param_group_fn": "x"}}, "kwargs.param_group_fn .*model.optim.layer_decay"),
    ({"name": "timm/sgd", "kwargs": {"opt": "adamw"}}, "kwargs.opt .*model.optim.name"),
    ({"name": "timm/sgd", "kwargs": {"filter_bias_and_bn": False}}, "kwargs.filter_bias_and_bn .*matrices only"),
    ({"schedule": "const", "min_lr_ratio": 0.1}, "min_lr_ratio is read by the cosine schedule only"),
    ({"schedule": "const-cooldown", "cooldown_steps": 2, "min_lr_ratio": 0.1}, "min_lr_ratio is read by the cos"),
    ({"schedule": "cosine", "cooldown_steps": 5}, "cooldown_steps is read by the const-cooldown schedule only"),
    ({"schedule": "const", "cooldown_power": 2.0}, "cooldown_power is read by the const-cooldown"),
    ({"schedule": "cosine", "cooldown_end_ratio": 0.1}, "cooldown_end_ratio is read by the const-cooldown"),
])
def test_an_option_the_optimiser_would_ignore_is_refused_at_config_time(options, message):
    """Refused when the module is built (before any data or step), and by build_optimizer itself."""
    optim = OptimConfig(**options)
    with pytest.raises(ClipModuleError, match=message.replace("(", r"\(")) as refused:
        ClipLitModule(build_network("tiny-vit"), optim=optim)
    assert "\n" not in str(refused.value) and str(refused.value).startswith(f"model.optim (name {optim.name!r})")
    with pytest.raises(ClipModuleError, match="model.optim"):
        build_optimizer(torch.nn.Linear(2, 2), optim, 10)


def _hyper(optimizer: torch.optim.Optimizer, key: str):
    return optimizer.param_groups[0][key]


@pytest.mark.parametrize("name", ["lamb", "lion"])
def test_betas_and_eps_reach_lamb_and_lion(name):
    optimizer, _ = build_optimizer(torch.nn.Linear(2, 2), OptimConfig(name=name, betas=(0.8, 0.9), eps=1e-6
                                                                      if name == "lion" else 1e-4), 10)
    assert tuple(_hyper(optimizer, "betas")) == (0.8, 0.9)
    if name == "lamb":
        assert _hyper(optimizer, "eps") == 1e-4


def test_a_timm_optimisers_betas_and_eps_come_from_kwargs():
    optimizer, _ = build_optimizer(torch.nn.Linear(2, 2), OptimConfig(name="timm/adamw", kwargs={
        "betas": (0.8, 0.9), "eps": 1e-7}), 10)
    assert tuple(_hyper(optimizer, "betas")) == (0.8, 0.9) and _hyper(optimizer, "eps") == 1e-7


def test_adamw_honours_fused_betas_and_eps():
    optimizer, _ = build_optimizer(torch.nn.Linear(2, 2), OptimConfig(betas=(0.8, 0.9), eps=1e-7, fused=False), 10)
    assert (tuple(_hyper(optimizer, "betas")), _hyper(optimizer, "eps"), optimizer.defaults["fused"]) == (
        (0.8, 0.9), 1e-7, False)
    optimizer, _ = build_optimizer(torch.nn.Linear(2, 2), OptimConfig(fused=True), 10)
    assert optimizer.defaults["fused"] is True
