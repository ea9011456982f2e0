"""`clipmodule <command>`: a thin dispatcher. Each command lives in its own module and is imported only
when it runs, so `clipmodule --help` answers without importing torch, lightning or mlflow."""

from __future__ import annotations

import os
import sys

from clipformats.commands import Command, dispatch
from clipmodule.errors import ClipModuleError

# Each command's function takes argv (list[str]) and returns an exit code; its module is imported when it runs.
COMMANDS: list[Command] = [
    Command("convert", "convert checkpoints between OpenAI, open_clip and HF formats",
            "clipmodule.checkpoints.cli:main"),
    Command("models", "list the registered model names with parameter counts",
            "clipmodule.checkpoints.cli:list_models"),
    Command("compare", "compare MLflow runs: table, markdown report, PNG curves", "clipmodule.tracking.cli:main"),
    Command("fit", "train: LightningCLI, e.g. -c experiments/base.yaml -c experiments/tiny_cpu.yaml",
            "clipmodule.train.cli:fit"),
    Command("validate", "zero-shot and retrieval metrics of a checkpoint (LightningCLI)",
            "clipmodule.train.cli:validate"),
    Command("test", "as validate, on the test loaders (LightningCLI)", "clipmodule.train.cli:test"),
    Command("predict", "write image and text embeddings of shards (LightningCLI)", "clipmodule.train.cli:predict"),
    Command("ema-export", "the EMA weights of a fit checkpoint (model.ema) as a checkpoint of their own",
            "clipmodule.train.ema:main"),
    Command("search", "nearest samples of a `curation index` to a caption or --image, with a PNG contact sheet",
            "clipmodule.search.cli:main"),
    Command("serve", "a local web service: clip-retrieval's API, search page, curation browse view, data cards",
            "clipmodule.serve.cli:main"),
    Command("eval", "zeroshot | retrieval | linear-probe | suite evaluation of a CLIP model",
            "clipmodule.eval.cli:main"),
    Command("segment", "label every pixel of an image with one of --classes (MaskCLIP), an overlay PNG",
            "clipmodule.dense.cli:main"),
    Command("classifiers", "mmpretrain's CLIP classifiers: list them, or `classifiers test -c CONFIG --checkpoint W`",
            "clipmodule.classifiers.cli:main"),
]


# The optional dependency each extra brings (pyproject.toml): a command run on a smaller install names the
# extra to add instead of a traceback.
EXTRA_OF_MODULE = {
    "lightning": "train", "torchdata": "train", "webdataset": "train", "mlflow": "train", "torchmetrics": "train",
    "fsspec": "train", "s3fs": "train", "sklearn": "eval", "skimage": "eval", "matplotlib": "eval",
    "threadpoolctl": "eval", "pyarrow": "curation", "faiss": "curation",
    "fastapi": "serve", "uvicorn": "serve", "markdown_it": "serve",
}


def missing_extra(error: ModuleNotFoundError) -> str | None:
    """`pip install 'clipmodule[<extra>]'` advice when `error` is an optional dependency, else None."""
    extra = EXTRA_OF_MODULE.get((error.name or "").split(".")[0])
    return f"needs {error.name!r}, which this install lacks: pip install 'clipmodule[{extra}]'" if extra else None


def resolve_alias(command: str, rest: list[str]) -> tuple[str, list[str]]:
    """`clipmodule test -c CONFIG --checkpoint W` is mmpretrain's spelling of a classifier test: an alias of
    `clipmodule classifiers test` (LightningCLI's `test` has no `--checkpoint` option, so they never clash)."""
    if command == "test" and any(arg.split("=")[0] == "--checkpoint" for arg in rest):
        return "classifiers", ["test", *rest]
    return command, rest


def main(argv: list[str] | None = None) -> int:
    # OpenMP threads that spin while waiting make CPU runs several times slower as soon as anything else
    # (a data-loader worker, another job) wants a core; passive waiting costs nothing when the cores are free.
    # Set before torch is imported, which every command does lazily.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    # The Rust tokenizer's thread pool does not survive fork: a data-loader worker forked after the trainer
    # tokenised the zero-shot prompts would hang. Workers already tokenise in parallel, one each.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    argv = list(sys.argv[1:] if argv is None else argv)
    return dispatch("clipmodule", COMMANDS, argv, run=_run)


def _run(command: Command, argv: list[str]) -> int:
    name = command.name
    alias, argv = resolve_alias(name, argv)
    runner = {known.name: known for known in COMMANDS}[alias].runner
    try:
        return int(runner()(argv) or 0)
    except ClipModuleError as error:
        print(f"clipmodule {name}: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        from clipformats.files import disk_full

        if not disk_full(error):
            raise
        # results and checkpoints are written atomically: nothing partial is left, earlier files are intact
        where = f"{error.filename}: " if error.filename else ""
        print(f"clipmodule {name}: error: {where}no space left on device; free space and run the same command "
              "again", file=sys.stderr)
        return 2
    except ModuleNotFoundError as error:
        if missing_extra(error) is None:
            raise
        print(f"clipmodule {name}: error: {missing_extra(error)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
