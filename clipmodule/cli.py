"""`clipmodule <command>`: a thin dispatcher. Each command lives in its own module and is imported only
when it runs, so `clipmodule --help` answers without importing torch, lightning or mlflow."""

from __future__ import annotations

import importlib
import os
import sys

from clipmodule.errors import ClipModuleError

# command -> (module, function, one-line help). The function takes argv (list[str]) and returns an exit code.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "convert": ("clipmodule.checkpoints.cli", "main", "convert checkpoints between OpenAI, open_clip and HF formats"),
    "models": ("clipmodule.checkpoints.cli", "list_models", "list the registered model names with parameter counts"),
    "compare": ("clipmodule.tracking.cli", "main", "compare MLflow runs: table, markdown report, PNG curves"),
    "fit": ("clipmodule.train.cli", "fit",
            "train: LightningCLI, e.g. -c experiments/base.yaml -c experiments/tiny_cpu.yaml"),
    "validate": ("clipmodule.train.cli", "validate", "zero-shot and retrieval metrics of a checkpoint (LightningCLI)"),
    "test": ("clipmodule.train.cli", "test", "as validate, on the test loaders (LightningCLI)"),
    "predict": ("clipmodule.train.cli", "predict", "write image and text embeddings of shards (LightningCLI)"),
    "search": ("clipmodule.search.cli", "main",
               "nearest samples of a `curation index` to a caption or --image, with a PNG contact sheet"),
    "eval": ("clipmodule.eval.cli", "main", "zeroshot | retrieval | linear-probe | suite evaluation of a CLIP model"),
    "classifiers": ("clipmodule.classifiers.cli", "main",
                    "mmpretrain's CLIP classifiers: list them, or `classifiers test -c CONFIG --checkpoint W`"),
}


# The optional dependency each extra brings (pyproject.toml): a command run on a smaller install names the
# extra to add instead of a traceback.
EXTRA_OF_MODULE = {
    "lightning": "train", "torchdata": "train", "webdataset": "train", "mlflow": "train", "torchmetrics": "train",
    "fsspec": "train", "s3fs": "train", "sklearn": "eval", "skimage": "eval", "matplotlib": "eval",
    "threadpoolctl": "eval", "pyarrow": "curation", "faiss": "curation",
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


def _print_help() -> None:
    print("usage: clipmodule <command> [options]\n\ncommands:")
    for name, (_, _, text) in COMMANDS.items():
        print(f"  {name:<14}{text}")
    print("\n`clipmodule <command> --help` shows the options of one command.")


def main(argv: list[str] | None = None) -> int:
    # OpenMP threads that spin while waiting make CPU runs several times slower as soon as anything else
    # (a data-loader worker, another job) wants a core; passive waiting costs nothing when the cores are free.
    # Set before torch is imported, which every command does lazily.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    # The Rust tokenizer's thread pool does not survive fork: a data-loader worker forked after the trainer
    # tokenised the zero-shot prompts would hang. Workers already tokenise in parallel, one each.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        _print_help()
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"clipmodule: unknown command {command!r} (known: {', '.join(COMMANDS)})", file=sys.stderr)
        return 2
    module_name, function_name, _ = COMMANDS[resolve_alias(command, rest)[0]]
    rest = resolve_alias(command, rest)[1]
    try:
        function = getattr(importlib.import_module(module_name), function_name)
        return int(function(rest) or 0)
    except ClipModuleError as error:
        print(f"clipmodule {command}: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        from clipformats.files import disk_full

        if not disk_full(error):
            raise
        # results and checkpoints are written atomically: nothing partial is left, earlier files are intact
        where = f"{error.filename}: " if error.filename else ""
        print(f"clipmodule {command}: error: {where}no space left on device; free space and run the same command "
              "again", file=sys.stderr)
        return 2
    except ModuleNotFoundError as error:
        if missing_extra(error) is None:
            raise
        print(f"clipmodule {command}: error: {missing_extra(error)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
