"""Accumulation that keeps the negatives (GradCache, Gao et al. 2021; open_clip's --accum-freq).

A batch of k·b pairs is processed as k micro-batches of b. A first pass without gradients caches every
micro-batch's features; then each micro-batch is encoded again with gradients, put in its place among the
cached features, and the loss of the whole k·b batch is backpropagated. The gradient reaching the towers is
the full batch's, micro-batch by micro-batch, and their sum is the gradient of one step on k·b pairs, while
activations are only ever held for b. The logit scale and bias enter every pass; their gradient is taken in
the last pass only, since the loss (and so its derivative in them) is the same in all k. (The last, because
under DDP that pass is the one that all-reduces, and DDP expects a gradient for every parameter then.)

The random state (patch dropout) is put back before each re-encoding, so a micro-batch gets the same features
in both passes; at the end the generators stand where the caching pass left them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch

from clipmodule.errors import ClipModuleError
from clipmodule.train.resume import restore_generators

Encode = Callable[[dict[str, Any]], tuple[torch.Tensor, torch.Tensor]]
LossOfFeatures = Callable[[torch.Tensor, torch.Tensor, bool], torch.Tensor]


def split_batch(batch: dict[str, Any], parts: int) -> list[dict[str, Any]]:
    """`parts` micro-batches of the tensors (and lists) in `batch`, in order; other values are shared."""
    size = batch["image"].shape[0]
    if size % parts:
        raise ClipModuleError(f"a batch of {size} pairs does not split into model.accum_freq={parts} equal "
                              f"micro-batches: make data.batch_size a multiple of {parts}")
    step = size // parts
    micro: list[dict[str, Any]] = [{} for _ in range(parts)]
    for key, value in batch.items():
        for index, part in enumerate(micro):
            sliced = isinstance(value, (torch.Tensor, list, tuple)) and len(value) == size
            part[key] = value[index * step:(index + 1) * step] if sliced else value
    return micro


def generator_state(device: torch.device) -> dict[str, torch.Tensor]:
    """The generators patch dropout draws from: the CPU's, and the device's on a GPU (restore_generators' form)."""
    state = {"cpu_rng": torch.get_rng_state()}
    if device.type == "cuda" and torch.cuda.is_available():
        state["cuda_rng"] = torch.cuda.get_rng_state(device)
    return state


def _with_slice(cached: list[torch.Tensor], index: int, fresh: torch.Tensor) -> torch.Tensor:
    return torch.cat([*cached[:index], fresh, *cached[index + 1:]])


def accumulate_gradients(model: torch.nn.Module, micro_batches: list[dict[str, Any]], encode: Encode,
                         loss_of_features: LossOfFeatures, backward: Callable[[torch.Tensor, int], None],
                         device: torch.device) -> torch.Tensor:
    """Backpropagates the loss of the whole batch through every micro-batch in turn; returns that loss.

    `encode(micro_batch)` gives (image, text) features; `loss_of_features(images, texts, scale_grad)` the loss of
    the concatenated features, with the logit scale/bias carrying gradients only when `scale_grad`;
    `backward(loss, index)` runs the backward pass of micro-batch `index` (the caller decides gradient sync)."""
    states, images, texts = [], [], []
    statistics = running_stats(model)
    with torch.no_grad():
        for micro in micro_batches:
            states.append(generator_state(device))
            image_features, text_features = encode(micro)
            images.append(image_features)
            texts.append(text_features)
    restore_running_stats(model, statistics)  # the passes with gradients update them, once per micro-batch
    after_caching = generator_state(device)
    loss = None
    for index, micro in enumerate(micro_batches):
        restore_generators(states[index], device)
        image_features, text_features = encode(micro)
        loss = loss_of_features(_with_slice(images, index, image_features), _with_slice(texts, index, text_features),
                                index == len(micro_batches) - 1)
        backward(loss, index)
    restore_generators(after_caching, device)
    return loss.detach()


def running_stats(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Copies of the BatchNorm running statistics, which the caching pass would otherwise update a second time."""
    return {name: buffer.clone() for name, buffer in model.named_buffers()
            if name.rsplit(".", 1)[-1] in ("running_mean", "running_var", "num_batches_tracked")}


def restore_running_stats(model: torch.nn.Module, saved: dict[str, torch.Tensor]) -> None:
    with torch.no_grad():
        for name, buffer in model.named_buffers():
            if name in saved:
                buffer.copy_(saved[name])


def check_trainer_options(trainer: Any, accum_freq: int) -> None:
    """Refuses, in one line, the fit options that would silently change what the loss contrasts or that
    Lightning's manual optimisation (which accumulation runs under) rejects with a traceback."""
    if trainer.accumulate_grad_batches > 1:
        factor = trainer.accumulate_grad_batches
        raise ClipModuleError(f"trainer.accumulate_grad_batches={factor} would contrast each micro-batch with its own "
                              f"negatives only: set model.accum_freq={factor} and multiply data.batch_size by "
                              f"{factor} instead (the loss then sees the whole batch)")
    if accum_freq <= 1:
        return
    if trainer.gradient_clip_val:
        raise ClipModuleError("trainer.gradient_clip_val does not apply with model.accum_freq > 1 (Lightning's "
                              "manual optimisation): set model.accum_grad_clip instead")
    if "FSDP" in type(trainer.strategy).__name__:
        raise ClipModuleError("model.accum_freq > 1 is not supported with the FSDP strategy: use ddp")
    batch_size = getattr(trainer.datamodule, "batch_size", None)
    if isinstance(batch_size, int) and batch_size % accum_freq:
        raise ClipModuleError(f"data.batch_size={batch_size} does not split into model.accum_freq={accum_freq} "
                              f"equal micro-batches: make it a multiple of {accum_freq}")


def accumulated_step(module: Any, batch: dict[str, Any]) -> torch.Tensor:
    """One optimiser step of `ClipLitModule` over `batch` in `module.accum_freq` micro-batches (manual
    optimisation): gradients of all micro-batches, the non-finite check, clipping, step, schedule, clamp."""
    optimizer, schedule = module.optimizers(), module.lr_schedulers()
    micro_batches = split_batch(batch, module.accum_freq)
    strategy = module.trainer.strategy

    def backward(loss: torch.Tensor, index: int) -> None:
        # DDP all-reduces once, after the last micro-batch; the earlier ones accumulate locally
        last = index == len(micro_batches) - 1
        with contextlib.nullcontext() if last or not hasattr(strategy, "block_backward_sync") else \
                strategy.block_backward_sync():
            module.manual_backward(loss)

    loss = accumulate_gradients(module.model, micro_batches, module.encode_pair, module.loss_of_features,
                                backward, module.device)
    module.check_finite(loss)  # before the step: the weights stay those of the last good step
    if module.accum_grad_clip:
        module.clip_gradients(optimizer, gradient_clip_val=module.accum_grad_clip, gradient_clip_algorithm="norm")
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    schedule.step()
    module.clamp_logit_scale()
    module.log_step(loss, batch)
    return loss
