"""Training-free zero-shot segmentation (MaskCLIP): dense features scored against class text embeddings.

    result = clipmodule.segment(model, images, ["cat", "dog", "grass"], ["a photo of a {}."])
    result.labels          # [B, H, W] class index per pixel
    result.probabilities   # [B, K, H, W] softmax over the classes

Options (MaskCLIP's, all off by default):
- `prompt_denoising` (a probability, MaskCLIP: 0.5) and `key_smoothing` (a probability, MaskCLIP: 1.0) are
  MaskCLIP's `refine_output` as released (mmseg/models/decode_heads/maskclip_head.py), per window at the patch
  grid, on the released scale (probabilities: softmax(100 * cosine), not the model's logit scale): first a class
  whose probability stays below `prompt_denoising` at every patch of the window is taken out
  (its score set to -100); then, with key smoothing, every patch less sure than `key_smoothing` (its best
  probability below it; 1.0: all of them) gets the probabilities of all patches weighted by their key affinity
  `k k^T`, the last attention's keys (ViT: through its output projection, as the released backbone computes them)
  normalised over positions per channel as the released code does. The smoothed probabilities are then scored by
  the softmax as mmsegmentation's inference does (argmax kept): with key smoothing, `probabilities` are the
  softmax of the re-voted values (mmseg's inference), not calibrated probabilities, so key smoothing refuses a
  `background_threshold`.
- A class name may list alternatives separated by "; " ("red background; black background"): each is prompted,
  and a patch's score for the class is the best of theirs (`split_alternatives`; MaskCLIP's code scores extra
  background names so), taken per window before the refinements, so that two near-synonyms do not split their
  class's probability (each at 0.49, both would be denoised away).
- `background_threshold` with `background_index`: `classnames[background_index]` is not scored by its text; the
  pixels whose best class probability is below the threshold get it (its probability column is 0).
- `vit_path`: a ViT's dense features by the paper's value path ("value", the default) or by MaskCLIP's released
  backbone ("released": the residual and the last block's MLP kept; `clipmodule.models.dense`).

Images are normalised tensors [B, 3, H, W] of any size: the model sees `window`-pixel crops (default: its own
image size; another window resizes the model's position embeddings, `models.resize`) every `stride` pixels
(default 2/3 of the window), their score maps upsampled bilinearly and averaged where crops overlap; an image
smaller than the window is padded. Scores are `logit_scale.exp() * cosine` (MaskCLIP's 100 for OpenAI's models);
the refinements use the released scale, softmax(100 * cosine), whatever the model's logit scale.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from clipmodule.errors import ClipModuleError
from clipmodule.models.dense import VIT_PATHS, dense_output, pixel_text_scores
from clipmodule.models.resize import resize_model


@dataclass(frozen=True)
class SegmentOptions:
    """MaskCLIP's inference options (see the module's docstring)."""

    key_smoothing: float | None = None
    prompt_denoising: float | None = None
    background_threshold: float | None = None
    background_index: int = 0
    window: int | None = None
    stride: int | None = None
    vit_path: str = "value"
    """A ViT's dense features: "value" (the paper's) or "released" (MaskCLIP's released backbone;
    `clipmodule.models.dense`)."""

    def __post_init__(self):
        if self.vit_path not in VIT_PATHS:
            raise ClipModuleError(f"vit_path {self.vit_path!r}: expected one of {', '.join(VIT_PATHS)}")
        if self.key_smoothing is not None and self.background_threshold is not None:
            raise ClipModuleError("key_smoothing and background_threshold do not go together: key smoothing's scores "
                                  "are re-voted probabilities whose softmax is no confidence to threshold; use one")


@dataclass
class SegmentationResult:
    labels: torch.Tensor
    """[B, H, W] int64 class index per pixel."""
    probabilities: torch.Tensor
    """[B, K, H, W] float32."""


@torch.no_grad()
def class_text_embeddings(model, tokenizer: Callable, classnames: Sequence[str],
                          templates: Sequence[str]) -> torch.Tensor:
    """[K, embed_dim] unit class embeddings: each class's filled templates embedded, averaged, renormalised (the
    paper's prompt ensemble). Templates hold one "{}" (or "{c}") for the class name."""
    if not templates or any(template.replace("{c}", "{}").count("{}") != 1 for template in templates):
        raise ClipModuleError(f"templates need one '{{}}' slot each for the class name, got {list(templates)!r:.120}")
    device = next(model.parameters()).device
    rows = []
    for name in classnames:
        texts = [template.replace("{c}", "{}").format(name) for template in templates]
        embeddings = model.encode_text(tokenizer(texts).to(device), normalize=True).float()
        rows.append(F.normalize(embeddings.mean(dim=0), dim=-1))
    return torch.stack(rows)


def split_alternatives(classnames: Sequence[str]) -> tuple[list[str], torch.Tensor]:
    """(the names to prompt, [M] the class index of each): "a; b" is two names of one class."""
    names, owners = [], []
    for index, classname in enumerate(classnames):
        parts = [part.strip() for part in classname.split(";") if part.strip()]
        if not parts:
            raise ClipModuleError(f"class {index}: an empty class name ({classname!r})")
        names.extend(parts)
        owners.extend([index] * len(parts))
    return names, torch.tensor(owners)


def best_of_alternatives(scores: torch.Tensor, owners: torch.Tensor | None) -> torch.Tensor:
    """[B, M, H, W] scores of the prompted names -> [B, K, H, W]: each class's best name."""
    if owners is None:
        return scores
    owners = owners.to(scores.device)
    return torch.stack([scores[:, owners == index].amax(dim=1) for index in range(int(owners.max()) + 1)], dim=1)


RELEASED_SCALE = 100.0
"""The refinements' softmax temperature as released (`softmax(cosine * 100)`), whatever the model's logit scale."""


def absent_classes(cosines: torch.Tensor, threshold: float) -> torch.Tensor:
    """[B, K] MaskCLIP's prompt denoising: the classes of [B, K, h, w] cosines whose probability (softmax of 100 x
    cosine, as released) stays below `threshold` at every patch."""
    return (cosines.float() * RELEASED_SCALE).softmax(dim=1).flatten(2).amax(dim=-1) < threshold


def denoise_prompts(cosines: torch.Tensor, threshold: float) -> torch.Tensor:
    """MaskCLIP's prompt denoising: [B, K, h, w] cosines, an absent class's (`absent_classes`) set to -100."""
    return cosines.masked_fill(absent_classes(cosines, threshold)[:, :, None, None], -100.0)


def smooth_by_keys(cosines: torch.Tensor, keys: torch.Tensor, threshold: float) -> torch.Tensor:
    """MaskCLIP's key smoothing: [B, K, h, w] cosines -> probabilities (softmax of 100 x cosine, as released), those
    of patches whose best is below `threshold` replaced by the key-affinity-weighted sum over all patches (keys
    [B, h*w, C])."""
    batch, classes, height, width = cosines.shape
    probabilities = (cosines.float() * RELEASED_SCALE).softmax(dim=1).flatten(2).transpose(1, 2)  # [B, hw, K]
    keys = F.normalize(keys.float(), dim=1)  # over positions, per channel, as the released head does
    weighted = (keys @ keys.transpose(1, 2)) @ probabilities
    unsure = probabilities.amax(dim=-1, keepdim=True) < threshold
    smoothed = torch.where(unsure, weighted, probabilities)
    return smoothed.transpose(1, 2).reshape(batch, classes, height, width)


def window_scores(model, crops: torch.Tensor, text: torch.Tensor, options: SegmentOptions,
                  owners: torch.Tensor | None = None) -> torch.Tensor:
    """[B, K, window, window] score maps of window-sized crops (MaskCLIP's refinements at the patch grid); with
    `owners` ([M], the class of each of the M rows of `text`) each class scores as its best name, before the
    refinements (so that near-synonym names do not split their class's probability). The refinements work on the
    released scale (100 x cosine); without key smoothing the scores are the model's (`logit_scale.exp()` x cosine,
    a denoised class -100), with it the re-voted probabilities."""
    dense = dense_output(model, crops, options.vit_path)
    cosines = best_of_alternatives(pixel_text_scores(dense.features, text), owners)
    absent = absent_classes(cosines, options.prompt_denoising) if options.prompt_denoising is not None else None
    if absent is not None:
        cosines = cosines.masked_fill(absent[:, :, None, None], -100.0)
    if options.key_smoothing is not None:
        if dense.keys is None:
            raise ClipModuleError("key_smoothing needs the last attention's keys; this image tower has none")
        scores = smooth_by_keys(cosines, dense.keys, options.key_smoothing)
    else:
        scores = model.logit_scale.exp().float() * cosines
        if absent is not None:
            scores = scores.masked_fill(absent[:, :, None, None], -100.0)
    return F.interpolate(scores, size=crops.shape[-2:], mode="bilinear", align_corners=False)


def _starts(length: int, window: int, stride: int) -> list[int]:
    """Crop offsets covering [0, length) (mmsegmentation's slide inference: the last crop ends at the edge)."""
    count = max(length - window + stride - 1, 0) // stride + 1
    return sorted({min(index * stride, length - window) for index in range(count)})


def slide_scores(model, images: torch.Tensor, text: torch.Tensor, options: SegmentOptions,
                 batch_size: int = 64, owners: torch.Tensor | None = None) -> torch.Tensor:
    """[B, K, H, W] scores of images of any size, by overlapping windows (up to `batch_size` crops per pass;
    `owners`: as `window_scores`)."""
    window = model.config.vision.image_size
    stride = options.stride or max(1, window * 2 // 3)
    height, width = images.shape[-2:]
    padded = F.pad(images, (0, max(window - width, 0), 0, max(window - height, 0)))
    boxes = [(top, left) for top in _starts(padded.shape[-2], window, stride)
             for left in _starts(padded.shape[-1], window, stride)]
    crops = torch.cat([padded[:, :, top:top + window, left:left + window] for top, left in boxes])
    scores = torch.cat([window_scores(model, chunk, text, options, owners) for chunk in crops.split(batch_size)])
    scores = scores.view(len(boxes), images.shape[0], *scores.shape[1:])
    total = padded.new_zeros(images.shape[0], scores.shape[2], *padded.shape[-2:], dtype=torch.float32)
    count = padded.new_zeros(1, 1, *padded.shape[-2:], dtype=torch.float32)
    for (top, left), score in zip(boxes, scores):
        total[:, :, top:top + window, left:left + window] += score
        count[:, :, top:top + window, left:left + window] += 1
    return (total / count)[:, :, :height, :width]


def labels_from_scores(scores: torch.Tensor, options: SegmentOptions) -> SegmentationResult:
    """Softmax, background threshold, argmax (scores [B, K, H, W] over the scored classes)."""
    probabilities = scores.softmax(dim=1)
    if options.background_threshold is None:
        return SegmentationResult(probabilities.argmax(dim=1), probabilities)
    best, labels = probabilities.max(dim=1)
    index = options.background_index
    labels = labels + (labels >= index).long()  # the scored classes back to their places around the background
    labels[best < options.background_threshold] = index
    zeros = probabilities.new_zeros(probabilities.shape[0], 1, *probabilities.shape[-2:])
    probabilities = torch.cat([probabilities[:, :index], zeros, probabilities[:, index:]], dim=1)
    return SegmentationResult(labels, probabilities)


@torch.no_grad()
def segment_with_embeddings(model, images: torch.Tensor, text: torch.Tensor,
                            options: SegmentOptions = SegmentOptions(),
                            output_size: tuple[int, int] | None = None,
                            owners: torch.Tensor | None = None) -> SegmentationResult:
    """`segment` with the class embeddings [K, embed_dim] given (without the background's, if thresholded);
    `output_size` (H, W): the scores resized bilinearly to it before the labels are taken (an image predicted
    smaller than its label map, as mmsegmentation); `owners` [M]: the class of each of M embeddings when classes
    have several names (`split_alternatives`)."""
    if images.dim() != 4 or images.shape[1] != 3:
        raise ClipModuleError(f"images must be a [B, 3, H, W] tensor, got shape {tuple(images.shape)}")
    if options.window is not None and options.window != model.config.vision.image_size:
        model = resize_model(model, image_size=options.window)
    device = next(model.parameters()).device
    owners = owners.to(device) if owners is not None else None
    scores = slide_scores(model, images.to(device), text.to(device), options, owners=owners)
    if output_size is not None and tuple(output_size) != tuple(scores.shape[-2:]):
        scores = F.interpolate(scores, size=tuple(output_size), mode="bilinear", align_corners=False)
    return labels_from_scores(scores, options)


def segment(model, images: torch.Tensor, classnames: Sequence[str], templates: Sequence[str] = ("a photo of a {}.",),
            tokenizer: Callable | None = None, options: SegmentOptions | None = None,
            output_size: tuple[int, int] | None = None, **option_values) -> SegmentationResult:
    """Per-pixel labels and probabilities of `images` ([B, 3, H, W], normalised as the model's preprocess) over
    `classnames` (see the module's docstring; options as a `SegmentOptions` or its fields as keywords)."""
    from clipmodule.api import get_tokenizer

    options = options or SegmentOptions(**option_values)
    classnames = list(classnames)
    if not classnames:
        raise ClipModuleError("segment needs at least one class name")
    scored = list(classnames)
    if options.background_threshold is not None:
        if not 0 <= options.background_index < len(classnames):
            raise ClipModuleError(f"background_index {options.background_index} is not a class index "
                                  f"(0 to {len(classnames) - 1})")
        del scored[options.background_index]
    tokenizer = tokenizer or get_tokenizer(model)
    names, owners = split_alternatives(scored)
    text = class_text_embeddings(model, tokenizer, names, list(templates))
    return segment_with_embeddings(model, images, text, options, output_size, owners)
