"""Typed options of the evaluations (dataclasses with docstrings: the CLIs are generated from them).

Kept free of torch so that `clipmodule eval <command> --help` answers without importing it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field


@dataclass
class LoaderOptions:
    """How images are fed to the model."""

    batch_size: int = 256
    """Images per forward pass."""
    num_workers: int | None = None
    """DataLoader worker processes decoding images (0: in the main process). None: one per CPU core this
    process may use, at most 8, and none for a set of fewer than 4 batches (starting them costs more)."""
    device: str = "auto"
    """`cpu`, `cuda`, `cuda:1`…; `auto` picks CUDA when available."""

    def workers_for(self, size: int | None) -> int:
        """The worker count for a dataset of `size` items (None: unknown, e.g. shards)."""
        if self.num_workers is not None:
            return self.num_workers
        if size is not None and size < 4 * self.batch_size:
            return 0
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        return min(8, cores)

    def torch_device(self) -> torch.device:  # noqa: F821 (torch is imported when called)
        import torch

        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)


@dataclass(kw_only=True)
class NamedDataOptions:
    """A benchmark dataset given by name (`--dataset cifar10 --dataset_root DIR`; `clipmodule.eval.readers`)."""

    dataset_root: str | None = None
    """Folder of the local copy when the dataset is a benchmark name (cifar10, imagenet1k, voc2007_multilabel,
    flickr30k, wds/<name>…), in the layout it is distributed in (torchvision's or CLIP_benchmark's)."""
    split: str | None = None
    """Split of a named benchmark dataset (default: its test split, or `all` where it has no official one);
    a linear probe trains on its train (or trainval) split and tests on this one."""

    def named_data(self) -> dict[str, str | None]:
        return {"root": self.dataset_root, "split": self.split}


@dataclass
class LinearProbeOptions:
    """The paper's linear-probe protocol (Radford et al. 2021, appendix A.3)."""

    val_fraction: float = 0.2
    """Share of the training images held out (stratified) to choose C."""
    log10_c_range: tuple[float, float] = (-6.0, 6.0)
    """The sweep's range of log10(C), C = 1/λ."""
    coarse_step: float = 2.0
    """First grid step in decades; the step then halves around the best value…"""
    steps_per_decade: int = 8
    """…until it reaches this resolution."""
    max_iter: int = 1000
    """L-BFGS iterations per fit."""
    features: str = "pre_projection"
    """`pre_projection`: a ViT's class token before CLIP's projection (the paper's choice); `embedding`:
    the image embedding (a ModifiedResNet always gives its attention-pooled embedding)."""
    seed: int = 0
    """Seed of the validation split."""
    threads: int | None = None
    """BLAS/OpenMP threads for the fits (None: the libraries' default). On a busy machine 1 is far faster:
    idle threads spin-waiting for a core can slow small fits down thirtyfold."""
    fewshot_epochs: int = 10
    """Few-shot probe (a row's `fewshot_k`; CLIP_benchmark's protocol, `tasks.fewshot`): training epochs."""
    fewshot_lr: float = 0.1
    """Few-shot probe: AdamW's learning rate (cosine schedule)."""
    fewshot_batch_size: int = 64
    """Few-shot probe: features per training batch."""
    fewshot_val_fraction: float | None = None
    """Few-shot probe: share of the training images held out to choose the weight decay (CLIP_benchmark's
    `--val_proportion`); None: weight decay 0, CLIP_benchmark's default."""


@dataclass
class SegmentationSettings:
    """How a `segmentation` row predicts (MaskCLIP, `clipmodule.dense.segment`)."""

    short_side: int | None = None
    """Resize each image so its short side is this many pixels first (scores are resized back to the labels'
    size); None: the image's own size."""
    window: int | None = None
    """Sliding-window size (default: the model's image size; another one resizes its position embeddings)."""
    stride: int | None = None
    """Sliding-window stride (default: 2/3 of the window)."""
    key_smoothing: float | None = None
    """MaskCLIP's key smoothing: patches whose best probability is below this are re-voted by key affinity
    (MaskCLIP: 1.0; None: off)."""
    prompt_denoising: float | None = None
    """MaskCLIP's prompt denoising: classes below this probability everywhere in an image are dropped there."""
    background_threshold: float | None = None
    """On a set with a background class (VOC, Context-60, shapes-seg): pixels less sure than this are background
    and the background's own prompt is not scored; None: the background is scored by its prompt like any class."""
    vit_path: str = "value"
    """A ViT's dense features: `value` (the paper's value path) or `released` (MaskCLIP's released backbone: the last
    block's residual and MLP kept; `clipmodule.models.dense`)."""


@dataclass
class TaskSpec:
    """One evaluation: a task on a dataset (see `clipmodule.eval.readers.specs` for how datasets are named)."""

    task: str
    """The task kind: zeroshot, retrieval or linear-probe (`clipmodule.eval.tasks` registers them; it checks
    the row)."""
    dataset: str | None = None
    """Data of a zeroshot or retrieval task."""
    train: str | None = None
    """Training images of a linear probe (a validation split is held out of them)."""
    test: str | None = None
    """Test images of a linear probe."""
    root: str | None = None
    """Folder of the local copy when `dataset` (or `train`/`test`) is a benchmark dataset's name (`cifar10`,
    `imagenet1k`, `wds/<name>`…: `clipmodule.eval.readers`)."""
    split: str | None = None
    """Split of a named benchmark dataset (default: its test split; `all` where it has no official one); a
    linear probe reads it as the test split and trains on the dataset's train (or trainval) split."""
    classnames: str | None = None
    """Class-name file or `imagenet`; default: the dataset's own names (folders, CSV labels, builtin)."""
    templates: str = "imagenet"
    """Prompt-template file (one "{}" or "{c}" per line), `imagenet` (the paper's 80), `simple`, or a .json
    list of templates or dict of class-specific prompts {class name: [prompt, …]}."""
    recall_at: list[int] = field(default_factory=lambda: [1, 5, 10])
    """The k of retrieval recall@k."""
    language: str | None = None
    """Language of the class names and templates (CLIP_benchmark's `--language`: en, ar, cn, it, jp with
    `templates: clip_benchmark`), or of a dataset released per language (xtd10, crossmodal3600, babel_imagenet…);
    several, comma-separated, make one suite row each (`eval.languages`). None: English."""
    fewshot_k: int | None = None
    """A linear probe on k training images per class (CLIP_benchmark's `--fewshot_k`); None: the full-data probe."""
    name: str | None = None
    """Row label; default `<task>:<dataset>` (`:<k>-shot` added for a few-shot probe)."""
    segmentation: SegmentationSettings = field(default_factory=SegmentationSettings)
    """A segmentation row's inference settings."""

    def label(self) -> str:
        shots = f":{self.fewshot_k}-shot" if self.fewshot_k else ""
        return self.name or f"{self.task}:{self.dataset or self.test}{shots}"


@dataclass
class SuiteConfig:
    """A benchmark suite: a model and the tasks to run it on."""

    tasks: list[TaskSpec]
    """The (task, dataset) rows."""
    model: str | None = None
    """CLIP checkpoint path or a model name with local weights (as `clipmodule.load`)."""
    models: list[str] = field(default_factory=list)
    """Several models instead of `model`: names, checkpoint files, folders or globs of checkpoints; one table, one
    plot and the grouped averages of them all (`clipmodule.eval.collection`)."""
    name: str = "suite"
    """Suite name: the table is written to `<output>/<name>.md` and `.json`."""
    output: str = "eval_results"
    """Folder of the table files."""
    loader: LoaderOptions = field(default_factory=LoaderOptions)
    probe: LinearProbeOptions = field(default_factory=LinearProbeOptions)
