"""The LightningModule: wiring only. It receives a built CLIP model, computes the contrastive loss over the
global batch, owns the optimiser and schedule, and reports zero-shot and retrieval metrics on validation."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Literal

import lightning as L
import torch
from torch import nn

from clipmodule.api import tokenizer_spec
from clipmodule.errors import ClipModuleError
from clipmodule.loss import clip_loss, siglip_loss
from clipmodule.models import CLIP, create_model
from clipmodule.models.lora import LoRAConfig, apply_lora
from clipmodule.train.accumulate import accumulated_step, check_trainer_options
from clipmodule.train.distill import DistillConfig, Teacher, distill_clip_loss
from clipmodule.train.ema import EmaCallback, EmaConfig
from clipmodule.train.hard_negatives import HardNegativesConfig, NegativeCaptions, encode_with_negatives
from clipmodule.train.init import start_from_weights
from clipmodule.train.lock import LockConfig, apply_lock, keep_in_eval
from clipmodule.train.optim import OptimConfig, build_optimizer, check_options, matrix_names
from clipmodule.train.pixels import PixelNorm, preprocess_of_record, preprocess_record
from clipmodule.train.resume import check_state_fits, restore_generators, store_rank_states, take_rank_state
from clipmodule.train.validation import ValidationTrackers, build_trackers, check_sets

MAX_LOG_SCALE = math.log(100.0)


def count_cpu_attention_flops() -> None:
    """torch's FLOP counter, which Lightning's model summary uses, has formulas for the CUDA attention kernels only:
    on CPU every attention product counted 0. The CPU kernel gets the same formula (q·k and attention·v)."""
    from torch.utils import flop_counter

    target = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if target is not None and target not in flop_counter.flop_registry:
        flop_counter.register_flop_formula(target, get_raw=True)(flop_counter.sdpa_flop)


def build_network(name: str, patch_dropout: float = 0.0, init_logit_scale: float | None = None,
                  init_logit_bias: float | None = None, quick_gelu: bool | None = None,
                  overrides: dict[str, Any] | None = None) -> CLIP:
    """A randomly initialised CLIP from the model registry (`clipmodule models` lists the names).

    Args:
        name: registered model name, e.g. RN50, ViT-B-32, tiny-vit.
        patch_dropout: FLIP: share of image patches dropped during training (ViT only).
        init_logit_scale: initial log of the logit scale; default log(1/0.07). SigLIP uses log(10).
        init_logit_bias: adds a learnable logit bias (SigLIP: -10).
        quick_gelu: OpenAI's x*sigmoid(1.702x) activation instead of exact GELU; default: the config's.
        overrides: any other config field, e.g. {"image_size": 128, "text": {"layers": 6}}.
    """
    options = dict(overrides or {})
    options["patch_dropout"] = patch_dropout
    options["init_logit_bias"] = init_logit_bias
    if init_logit_scale is not None:
        options["init_logit_scale"] = init_logit_scale
    if quick_gelu is not None:
        options["quick_gelu"] = quick_gelu
    return create_model(name, **options)


def check_lora_lock(lora: LoRAConfig, lock: LockConfig) -> None:
    """LoRA freezes its towers' weights itself; a lock on a tower it adapts would also stop the adapters' gradients."""
    for tower, locked in (("image", lock.lock_image), ("text", lock.lock_text)):
        if locked and tower in lora.towers:
            raise ClipModuleError(f"model.lock locks the {tower} tower that model.lora adapts: LoRA already freezes "
                                  f"its weights; drop the lock or leave {tower!r} out of model.lora.towers")


def check_step_options(accum_freq: int, optim: OptimConfig) -> None:
    """Refusals of the step's options, before any data or step: the accumulation factor, and an option the chosen
    optimiser would ignore (`clipmodule.train.optim.check_options`)."""
    if accum_freq < 1:
        raise ClipModuleError(f"model.accum_freq must be 1 or more, got {accum_freq}")
    check_options(optim)


class ClipLitModule(L.LightningModule):
    """Contrastive training of a CLIP model.

    Args:
        model: the network (see `build_network`); null with `init_from`: the file's architecture.
        loss: "clip" (the paper's softmax) or "siglip" (sigmoid; the model needs a logit bias).
        local_loss: CLIP loss on this rank's rows against all columns (less memory, same result).
        optim: optimiser and schedule.
        grad_checkpointing: recompute activations in backward (less memory).
        compile: `torch.compile` the image and text towers.
        zeroshot_classnames: class names of the zero-shot validation shards, in label order.
        zeroshot_templates: prompts with "{}" for the class name, averaged into the classifier.
        accum_freq: k > 1 splits each batch into k micro-batches and accumulates their gradients while the loss
            still contrasts the whole batch (GradCache: features cached without gradients, then each micro-batch
            re-encoded with them); activations are held for batch/k pairs. Runs under manual optimisation.
        accum_grad_clip: gradient-norm clip of the accumulated steps (trainer.gradient_clip_val with accum_freq 1).
        siglip_exchange: how the SigLIP loss reaches the other ranks' texts: "gather" all at once, or pass them
            round the ranks ("shift", "bidir": both ways at once), one block at a time, recomputed in the backward
            pass; the same loss and gradients, and loss memory per rank that stays flat as ranks are added.
        init_from: start from these weights (anything `clipmodule.load` reads, or open_clip's released weights as
            {name, pretrained}; `clipmodule.train.init`); `model`, if
            given, must be the file's architecture. Recorded in MLflow (init_from/path, init_from/sha256).
            `--ckpt_path` still resumes, and its weights win.
        init_architecture: the architecture of an `init_from` file that does not say it (load's `model=`).
        lock: which tower parts are frozen (LiT; `clipmodule.train.lock`).
        lora: low-rank adapters on the towers' projections; only they train (`clipmodule.models.lora`; fold them
            into plain weights with `clipmodule convert --merge_lora`).
        hard_negatives: rule-based negative captions of each training sample (NegCLIP), extra text candidates of
            its image in the loss (`clipmodule.train.hard_negatives`).
        distill: a frozen teacher and open_clip's distillation loss (`clipmodule.train.distill`; CLIP loss only).
        ema: an exponential moving average of the weights, validated beside them (`clipmodule.train.ema`).
    """

    # LightningCLI's constructor: each parameter is a `model.*` YAML key, so the argument count is the config's
    def __init__(self, model: nn.Module | None = None, loss: Literal["clip", "siglip"] = "clip",  # noqa: PLR0913
                 local_loss: bool = False, optim: OptimConfig = OptimConfig(), grad_checkpointing: bool = False,
                 compile: bool = False,
                 zeroshot_classnames: list[str] | None = None, zeroshot_templates: list[str] | None = None,
                 accum_freq: int = 1, accum_grad_clip: float | None = None,
                 siglip_exchange: Literal["gather", "shift", "bidir"] = "gather",
                 init_from: str | dict[str, str] | None = None, init_architecture: str | None = None,
                 lock: LockConfig = LockConfig(), lora: LoRAConfig | None = None,
                 hard_negatives: HardNegativesConfig | None = None, distill: DistillConfig | None = None,
                 ema: EmaConfig | None = None):
        super().__init__()
        count_cpu_attention_flops()  # before Lightning's model summary counts (it copies torch's formulas then)
        self.init_source: dict[str, str] | None = None
        if init_from is not None:
            model, self.init_source = start_from_weights(init_from, init_architecture, model)
        elif model is None:
            raise ClipModuleError("no network: set model.model (e.g. clipmodule.train.module.build_network) or "
                                  "model.init_from")
        check_step_options(accum_freq, optim)
        self.accum_freq, self.accum_grad_clip, self.siglip_exchange = accum_freq, accum_grad_clip, siglip_exchange
        self.automatic_optimization = accum_freq == 1
        if loss == "siglip" and getattr(model, "logit_bias", None) is None:
            raise ClipModuleError("the siglip loss needs a model with a logit bias: set init_logit_bias (e.g. -10)")
        self.model, self.loss_name, self.local_loss, self.optim = model, loss, local_loss, optim
        self.pixels = PixelNorm.of(model)  # the mean/std its weights were trained with (`clipmodule.train.pixels`)
        if lora is not None:
            check_lora_lock(lora, lock)
            apply_lora(model, lora)
        if distill is not None and loss != "clip":
            raise ClipModuleError("model.distill works with the clip loss (open_clip's DistillClipLoss) only")
        if distill is not None and hard_negatives is not None:
            raise ClipModuleError("model.distill and model.hard_negatives cannot be combined (the teacher's "
                                  "distributions have no columns for the negative captions)")
        self.teacher = Teacher(distill, model) if distill is not None else None
        self.distill, self.ema = distill, ema
        self._teacher_features: tuple[torch.Tensor, torch.Tensor] | None = None
        self._loss_parts: tuple[torch.Tensor, torch.Tensor] | None = None
        self._shadow: ValidationTrackers | None = None
        self._keep_in_eval = apply_lock(model, lock)  # before compile: the no-grad hooks are compiled with the tower
        self.classnames = list(zeroshot_classnames or [])
        self._matrices = matrix_names(model)  # weight decay's rule, read before FSDP flattens the parameters
        self.templates = list(zeroshot_templates or ["a photo of a {}."])
        if grad_checkpointing:
            model.set_grad_checkpointing(True)
        if compile:
            model.visual.compile()
            model.transformer.compile()
        self.save_hyperparameters({
            "loss": loss, "local_loss": local_loss, "optim": dataclasses.asdict(optim),
            "grad_checkpointing": grad_checkpointing, "compile": compile, "accum_freq": accum_freq,
            "accum_grad_clip": accum_grad_clip, "siglip_exchange": siglip_exchange,
            "network": model.config.to_dict() if hasattr(model, "config") else type(model).__name__,
            "init_from": self.init_source, "lock": dataclasses.asdict(lock),
            "lora": None if lora is None else dataclasses.asdict(lora),
            "hard_negatives": None if hard_negatives is None else dataclasses.asdict(hard_negatives),
            "distill": self.teacher.source if self.teacher is not None else None,
            "ema": dataclasses.asdict(ema) if ema is not None else None, "preprocess": preprocess_record(model),
        })
        self.negative_captions = None if hard_negatives is None else NegativeCaptions(hard_negatives)
        self._validation: ValidationTrackers | None = None

    @property
    def example_input_array(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """One image and one caption filling the context: Lightning's model summary runs them through `forward`,
        so its FLOPs are those of one pair's forward pass at full caption length (shorter captions cost less: the
        padding is cut). None under FSDP: outside the strategy's own forward the parameters are shards."""
        config = getattr(self.model, "config", None)
        if config is None or (self._trainer is not None and "FSDP" in type(self.trainer.strategy).__name__):
            return None
        image = torch.zeros(1, 3, config.vision.image_size, config.vision.image_size)
        text = torch.full((1, config.text.context_length), 2, dtype=torch.long)  # no pad id: an HF tower reads all
        if getattr(self.model, "text", None) is None:
            text[0, -1] = config.text.vocab_size - 1  # the end-of-text token (largest id) last: nothing is cut
        return image, text

    def forward(self, image: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The model's logits (per image, per text): through the network's own call, so that the summary's row for
        it gets its FLOPs and sizes too."""
        return self.model(image, text)

    def contrastive_loss(self, images: torch.Tensor, texts: torch.Tensor) -> torch.Tensor:
        return self.loss_of_features(*self.encode_pair({"image": images, "text": texts}))

    def encode_pair(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        images = self.model.encode_image(batch["image"], normalize=True)
        if "negatives" in batch:  # [B, 1 + K, D]: each caption, then its hard negatives
            return images, encode_with_negatives(self.model, batch)
        return images, self.model.encode_text(batch["text"], normalize=True)

    def loss_of_features(self, image_features: torch.Tensor, text_features: torch.Tensor,
                         scale_grad: bool = True) -> torch.Tensor:
        """The loss of this rank's features against every rank's; `scale_grad=False` holds the logit scale and
        bias constant (accumulation takes their gradient in the last of its k passes)."""
        scale, bias = self.model.logit_scale.exp(), self.model.logit_bias
        if not scale_grad:
            scale, bias = scale.detach(), None if bias is None else bias.detach()
        rank, world_size = self.global_rank, self.trainer.world_size if self._trainer else 1
        if self.teacher is not None and self._teacher_features is not None:
            return self.distilled_loss(image_features, text_features, scale, rank, world_size)
        negatives = None
        if text_features.ndim == 3:  # captions and their hard negatives (`encode_pair`)
            text_features, negatives = text_features[:, 0], text_features[:, 1:]
        if self.loss_name == "siglip":
            return siglip_loss(image_features, text_features, scale, bias, rank=rank, world_size=world_size,
                               exchange=self.siglip_exchange, hard_negatives=negatives)
        return clip_loss(image_features, text_features, scale, rank=rank, world_size=world_size,
                         local_loss=self.local_loss, hard_negatives=negatives)

    def distilled_loss(self, image_features: torch.Tensor, text_features: torch.Tensor, scale: torch.Tensor,
                       rank: int, world_size: int) -> torch.Tensor:
        """The weighted sum of the contrastive and distillation losses, against the teacher's features of this
        batch (`clipmodule.train.distill`); the two terms are kept for the log."""
        teacher_images, teacher_texts = self._teacher_features
        contrastive, distill = distill_clip_loss(image_features, text_features, scale, teacher_images, teacher_texts,
                                                 self.teacher.scale(), rank=rank, world_size=world_size,
                                                 local_loss=self.local_loss)
        self._loss_parts = contrastive.detach(), distill.detach()
        return self.distill.contrastive_weight * contrastive + self.distill.weight * distill

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """The batch contract: uint8 images are [0, 255] pixels (training; a quarter of the bytes to move),
        normalised here, on the device, with the network's own mean/std. Float images are taken as normalised with
        OpenAI's mean/std (every evaluation loader of this project), or with the batch's `image_norm` (mean, std)
        where a data module says otherwise; moved to the network's where they differ (`PixelNorm.carried`)."""
        image = batch.get("image") if isinstance(batch, dict) else None
        if isinstance(image, torch.Tensor) and image.dtype == torch.uint8:
            batch = {**batch, "image": self.pixels.normalise(image)}
        elif isinstance(image, torch.Tensor) and image.is_floating_point():
            carried = PixelNorm.carried(batch)
            batch = batch if carried == self.pixels else {**batch, "image": carried.to(image, self.pixels)}
        return batch

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        if self.negative_captions is not None:
            batch = self.add_hard_negatives(batch)
        if self.teacher is not None:  # micro-batch by micro-batch, as the student's features are cached
            self._teacher_features = self.teacher.encode_batch(batch, self.accum_freq, self.pixels)
        if self.accum_freq > 1:
            return accumulated_step(self, batch)
        loss = self.loss_of_features(*self.encode_pair(batch))  # the batch whole: its hard negatives too
        self.check_finite(loss)
        self.log_step(loss, batch)
        return loss

    def add_hard_negatives(self, batch: dict[str, Any]) -> dict[str, Any]:
        """The batch with its captions' negatives as tokens (the lexicon read and the data's tokenizer built once)."""
        if self.negative_captions.tokenizer is None:
            data = getattr(self.trainer, "datamodule", None) if self._trainer else None
            self.negative_captions.load((getattr(data, "tokenizer", None) or tokenizer_spec(self.model)).build(
                truncate=True))
        return self.negative_captions.add(batch)

    def check_finite(self, loss: torch.Tensor) -> None:
        finite = torch.isfinite(loss.detach()).all()
        if not self.trainer.strategy.reduce_boolean_decision(bool(finite), all=True):
            raise ClipModuleError(f"non-finite loss ({loss.item()}) at step {self.global_step}; training stopped, "
                                  "the checkpoints written so far are intact")

    def log_step(self, loss: torch.Tensor, batch: dict[str, Any]) -> None:
        batch_size = batch["image"].shape[0]
        samples_seen = (self.trainer.fit_loop.epoch_loop.total_batch_idx + 1) * batch_size * self.trainer.world_size
        self.log("train/loss", loss, prog_bar=True, batch_size=batch_size)
        if self._loss_parts is not None:
            self.log("train/contrastive_loss", self._loss_parts[0], batch_size=batch_size)
            self.log("train/distill_loss", self._loss_parts[1], batch_size=batch_size)
        if self._logging_step():
            self.log("train/logit_scale", self.model.logit_scale.exp(), batch_size=batch_size)
            self.log("train/samples_seen", float(samples_seen), batch_size=batch_size)
            if self.model.logit_bias is not None:
                self.log("train/logit_bias", self.model.logit_bias, batch_size=batch_size)

    def _logging_step(self) -> bool:
        """Whether Lightning hands this step's metrics to the logger (every `log_every_n_steps`). Every `self.log`
        costs a share of the step, so the diagnostics the logger would drop are not logged at all."""
        connector = getattr(self.trainer, "_logger_connector", None)
        return bool(getattr(connector, "should_update_logs", True))

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        super().optimizer_step(*args, **kwargs)
        self.clamp_logit_scale()

    def clamp_logit_scale(self) -> None:
        with torch.no_grad():  # the paper: the scale may not exceed 100
            self.model.logit_scale.clamp_(max=MAX_LOG_SCALE)

    def configure_callbacks(self) -> list[Any]:
        """Lightning calls this before it checks its own loop configuration: the refusals that must come first."""
        if self._trainer is not None and self.trainer.state.fn == "fit":
            check_trainer_options(self.trainer, self.accum_freq)
        return [EmaCallback(self.ema)] if self.ema is not None else []

    def configure_optimizers(self) -> dict[str, Any]:
        total = int(self.trainer.estimated_stepping_batches) if self._trainer else self.optim.warmup_steps + 1
        optimizer, schedule = build_optimizer(self.model, self.optim, total, self._matrices)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    # --- validation: retrieval on held-out pairs, zero-shot classification on labelled images ---

    def on_validation_epoch_start(self) -> None:
        self._validation = self.trackers_of(self.model)

    def trackers_of(self, model: nn.Module) -> ValidationTrackers:
        """Every validation set's tracker for `model` (`clipmodule.train.validation`: retrieval on
        `data.val_shards`, zero-shot on `data.zeroshot_shards` named by `model.zeroshot_classnames`, and each of
        `data.zeroshot_sets` by its task kind), built once per validation epoch."""
        data = getattr(self.trainer, "datamodule", None) if self._trainer else None
        tokenizer = None
        if self.classnames or getattr(data, "zeroshot_sets", None):  # sets that prompt the text tower
            # the data's tokenizer: it carries the tokenizer.json folder a model without one was given in the YAML
            tokenizer = (getattr(data, "tokenizer", None) or tokenizer_spec(self.model)).build()
        return build_trackers(model, data, tokenizer, self.device, (self.classnames, self.templates))

    def validation_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> None:
        self._validation.update(batch)

    def on_validation_epoch_end(self) -> None:
        self.log_validation(self._validation, "val/")

    def log_validation(self, trackers: ValidationTrackers | None, prefix: str) -> None:
        for name, value in (trackers.results() if trackers is not None else {}).items():
            self.log(prefix + name.removeprefix("val/"), value)

    # --- a second network validated beside the live one (the EMA weights, `clipmodule.train.ema`) ---

    def start_shadow_validation(self, network: nn.Module) -> None:
        self._shadow = self.trackers_of(network)

    def shadow_validation_step(self, batch: dict[str, Any]) -> None:
        if self._shadow is not None:
            with torch.no_grad():
                self._shadow.update(batch)

    def end_shadow_validation(self, prefix: str) -> None:
        self.log_validation(self._shadow, prefix)
        self._shadow = None

    def predict_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> dict[str, Any]:
        """Normalised embeddings of a batch, with the sample keys (`clipmodule predict`)."""
        return {"key": batch.get("key"), "image_features": self.model.encode_image(batch["image"], normalize=True),
                "text_features": self.model.encode_text(batch["text"], normalize=True)}

    test_step = validation_step
    on_test_epoch_start = on_validation_epoch_start
    on_test_epoch_end = on_validation_epoch_end

    # --- exact resume: every rank's loader position and random state (patch dropout) travel with the
    # checkpoint (clipmodule.train.resume). The generators are put back at train start, after the data
    # loaders were created (creating one draws a seed from the CPU generator). ---

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        store_rank_states(checkpoint, self.device, self._world_size())

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        trainer = self._trainer
        source = str(trainer.ckpt_path) if trainer is not None and trainer.ckpt_path else "given"
        if "FSDP" not in type(getattr(trainer, "strategy", None)).__name__:  # FSDP's own state dict is sharded
            check_state_fits(checkpoint.get("state_dict", {}), self.state_dict(), source)
        fitting = trainer is not None and trainer.state.fn == "fit"
        # the checkpoint's weights were trained with its recorded mean/std, else OpenAI's (`PixelNorm.of_checkpoint`)
        self.pixels = PixelNorm.of_checkpoint(checkpoint, source, self.pixels)
        hyper = checkpoint.get("hyper_parameters")
        if isinstance(hyper, dict):  # and its later checkpoints, trackers and exports say so too
            record = self.hparams["preprocess"] = hyper.get("preprocess")
            self.model.preprocess_cfg = preprocess_of_record(record, self.model.config.vision.image_size, source)
        self._rng_state = take_rank_state(checkpoint, self.global_rank, self._world_size(), source, fitting)

    def train(self, mode: bool = True) -> ClipLitModule:
        """Towers locked whole (and locked BatchNorms on request) stay in eval mode whatever Lightning asks."""
        super().train(mode)
        keep_in_eval(getattr(self, "_keep_in_eval", []))
        return self

    def on_fit_start(self) -> None:
        check_sets(getattr(self.trainer, "datamodule", None))  # a set no kind can track stops fit before any step
        if self.teacher is not None:  # after the strategy placed (and, for *-true precisions, cast) the student
            self.teacher.place(self.model)

    def on_train_start(self) -> None:
        restore_generators(getattr(self, "_rng_state", None), self.device)
        self._rng_state = None

    def _world_size(self) -> int:
        return self.trainer.world_size if self._trainer is not None else 1
