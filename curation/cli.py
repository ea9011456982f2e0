"""`curation <stage>`: a thin CLI. Every option comes from a dataclass field (its docstring is the help), and
each command imports its heavy modules (pyarrow, img2dataset, matplotlib) only when it runs, so
`curation --help` answers at once. Bad input ends with one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from curation.config import (
    BalanceConfig,
    DatasetConfig,
    DecontaminateConfig,
    DedupConfig,
    DownloadConfig,
    EmbedConfig,
    FilterConfig,
    IndexConfig,
    MatchConfig,
    QueriesConfig,
)
from curation.errors import CurationError
from curation.typed import add_arguments, from_namespace, load_yaml


@dataclass
class QueriesPaths:
    out: str = "work/queries.parquet"
    """Query list to write (a file); its stats go to <stem>.stats.json beside it."""
    overwrite: bool = False
    """Replace an output made with other settings (an up-to-date output is kept as it is)."""


@dataclass
class MatchPaths:
    captions: list[str]
    """Caption tables (parquet, csv, tsv, jsonl; .gz/.bz2/.zst too): files, folders or glob patterns."""
    queries: Path = Path("work/queries.parquet")
    """Query list written by `curation queries`."""
    out: Path = Path("work/matched")
    """Folder for the matched shards (one per input table); <out>.counts.parquet and <out>.stats.json beside it."""
    overwrite: bool = False
    """Replace an output made with other settings (an up-to-date output is kept as it is)."""


@dataclass
class BalancePaths:
    input: Path = Path("work/matched")
    """Folder written by `curation match`."""
    out: Path = Path("work/balanced")
    """Folder for the balanced shards; <out>.counts.parquet (matched vs kept per query) and <out>.stats.json
    beside it."""
    overwrite: bool = False
    """Replace an output made with other settings (an up-to-date output is kept as it is)."""


@dataclass
class DownloadPaths:
    input: Path = Path("work/balanced")
    """Folder written by `curation balance`."""
    out: Path = Path("work/shards")
    """Folder for img2dataset's shards; <out>.stats.json (totals) and <out>.log (img2dataset's output) beside it."""
    overwrite: bool = False
    """Replace an output made with other settings (an up-to-date output is kept as it is)."""


@dataclass
class FilterPaths:
    shards: list[str] = field(default_factory=lambda: ["work/shards"])
    """Input shards: webdataset .tar files or folders of them (`curation download` output)."""
    embeddings: Path = Path("work/embeddings")
    """Embedding folder of those shards (`curation embed`)."""
    out: Path = Path("work/filtered")
    """Folder for the filtered shards (same names); <out>.rows.parquet (every sample's decision), <out>.png (CLIP
    score histogram) and <out>.stats.json beside it."""
    overwrite: bool = False
    """Replace an output made with other settings (an up-to-date output is kept as it is)."""


@dataclass
class DedupPaths:
    shards: list[str] = field(default_factory=lambda: ["work/filtered"])
    """Input shards: webdataset .tar files or folders of them."""
    embeddings: Path = Path("work/embeddings")
    """Embedding folder covering those shards' samples (`curation embed`; the unfiltered shards' is fine)."""
    out: Path = Path("work/deduplicated")
    """Folder for the deduplicated shards (same names); <out>.drops.parquet, <out>.png and <out>.stats.json
    beside it."""
    overwrite: bool = False
    """Replace an output made with other settings (an up-to-date output is kept as it is)."""


@dataclass
class EmbedPaths:
    shards: list[str] = field(default_factory=lambda: ["work/shards"])
    """Shards to embed: webdataset .tar files, folders of them or brace patterns (`curation download` output)."""
    out: Path = Path("work/embeddings")
    """Folder for img_emb/, text_emb/ and metadata/ (one part per shard); <out>.stats.json beside it."""
    overwrite: bool = False
    """Replace an output made with other settings (an up-to-date output is kept as it is)."""


@dataclass
class IndexPaths:
    embeddings: Path = Path("work/embeddings")
    """Embedding folder (`curation embed` or `clipmodule predict` output)."""
    out: Path = Path("work/index")
    """Folder for the faiss index, its rows and settings; <out>.stats.json (recall, build time) beside it."""
    overwrite: bool = False
    """Replace an output made with other settings (an up-to-date output is kept as it is)."""


@dataclass
class DecontaminatePaths:
    eval: list[str]
    """Evaluation sets: folders of images (searched recursively) or webdataset .tar files."""
    shards: list[str] = field(default_factory=lambda: ["work/shards"])
    """Training shards: webdataset .tar files or folders of them (`curation download` output)."""
    out: Path = Path("work/decontaminated")
    """Folder for the cleaned shards (same names); <out>.drops.parquet, <out>.png and <out>.stats.json beside it."""
    embeddings: Path | None = None
    """Embedding folder of the training shards' samples; needed with --eval-embeddings (the embedding pass)."""
    overwrite: bool = False
    """Replace an output made with other settings (an up-to-date output is kept as it is)."""


@dataclass
class CardArgs:
    name: str
    """Dataset name: the card is written to <cards_dir>/<name>.{md,json,png}."""
    work_dir: Path = Path("work")
    """Folder holding queries.parquet, matched/, balanced/ and shards/ with their stats."""
    cards_dir: Path = Path("data_cards")
    """Folder for the card."""


@dataclass
class BuildArgs:
    config: Path = field(metadata={"flags": ("-c", "--config")})
    """Dataset YAML (see experiments/datasets/): runs queries, match, balance, download and card in order."""
    overwrite: bool = False
    """Rebuild stages whose settings changed (stages that are up to date are skipped)."""


def _queries(args: argparse.Namespace) -> None:
    from curation.queries import run_queries

    paths = from_namespace(QueriesPaths, args)
    if paths.out.endswith(("/", os.sep)):  # Path() would drop the slash and write a file named like the folder
        raise CurationError(f"{paths.out}: --out must name a file (e.g. {paths.out}queries.parquet), not a folder")
    run_queries(from_namespace(QueriesConfig, args), Path(paths.out), paths.overwrite)


def _match(args: argparse.Namespace) -> None:
    from curation.matching import run_match

    paths = from_namespace(MatchPaths, args)
    run_match(from_namespace(MatchConfig, args), paths.queries, paths.captions, paths.out, paths.overwrite)


def _balance(args: argparse.Namespace) -> None:
    from curation.balancing import run_balance

    paths = from_namespace(BalancePaths, args)
    run_balance(from_namespace(BalanceConfig, args), paths.input, paths.out, paths.overwrite)


def _download(args: argparse.Namespace) -> None:
    from curation.download import run_download

    paths = from_namespace(DownloadPaths, args)
    run_download(from_namespace(DownloadConfig, args), paths.input, paths.out, paths.overwrite)


def _filter(args: argparse.Namespace) -> None:
    from curation.filter import run_filter

    paths = from_namespace(FilterPaths, args)
    run_filter(from_namespace(FilterConfig, args), paths.shards, paths.embeddings, paths.out, paths.overwrite)


def _dedup(args: argparse.Namespace) -> None:
    from curation.dedup import run_dedup

    paths = from_namespace(DedupPaths, args)
    run_dedup(from_namespace(DedupConfig, args), paths.shards, paths.embeddings, paths.out, paths.overwrite)


def _embed(args: argparse.Namespace) -> None:
    from curation.embed import run_embed

    paths = from_namespace(EmbedPaths, args)
    run_embed(from_namespace(EmbedConfig, args), paths.shards, paths.out, paths.overwrite)


def _index(args: argparse.Namespace) -> None:
    from curation.index import run_index

    paths = from_namespace(IndexPaths, args)
    run_index(from_namespace(IndexConfig, args), paths.embeddings, paths.out, paths.overwrite)


def _decontaminate(args: argparse.Namespace) -> None:
    from curation.decontaminate import run_decontaminate

    paths = from_namespace(DecontaminatePaths, args)
    run_decontaminate(from_namespace(DecontaminateConfig, args), paths.eval, paths.shards, paths.out, paths.overwrite,
                      embeddings=paths.embeddings)


def _card(args: argparse.Namespace) -> None:
    from curation.cards import write_card

    card = from_namespace(CardArgs, args)
    write_card(card.name, card.work_dir, card.cards_dir)


def _build(args: argparse.Namespace) -> None:
    from curation.pipeline import build

    options = from_namespace(BuildArgs, args)
    build(load_yaml(options.config, DatasetConfig), options.overwrite)


# command -> (help, option dataclasses, runner)
COMMANDS: dict[str, tuple[str, tuple[type, ...], Callable[[argparse.Namespace], None]]] = {
    "queries": ("build the query list (WordNet, unigrams, bigrams, titles)", (QueriesPaths, QueriesConfig), _queries),
    "match": ("attach to each caption row the ids of the queries it contains", (MatchPaths, MatchConfig), _match),
    "balance": ("keep at most t rows per query in expectation", (BalancePaths, BalanceConfig), _balance),
    "download": ("download the balanced rows' images with img2dataset", (DownloadPaths, DownloadConfig), _download),
    "filter": ("keep samples by CLIP score, caption and image size, or image clusters near a target set",
               (FilterPaths, FilterConfig), _filter),
    "dedup": ("drop near-duplicate samples by image embedding (SemDeDup)", (DedupPaths, DedupConfig), _dedup),
    "embed": ("image and caption embeddings of shards with a CLIP model (one part per shard)",
              (EmbedPaths, EmbedConfig), _embed),
    "index": ("a faiss kNN index of an embedding folder, its recall measured", (IndexPaths, IndexConfig), _index),
    "decontaminate": ("drop training samples that are near-copies of evaluation images",
                      (DecontaminatePaths, DecontaminateConfig), _decontaminate),
    "card": ("write the data card from the stages' stats", (CardArgs,), _card),
    "build": ("run every stage of a dataset YAML in order, skipping finished ones", (BuildArgs,), _build),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="curation", description="Dataset curation for CLIP-style pretraining: "
        "queries → match → balance → download → card (or all of them: build).")
    commands = parser.add_subparsers(dest="command", required=True, metavar="<command>")
    for name, (text, option_classes, _) in COMMANDS.items():
        sub = commands.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".")
        for option_class in option_classes:
            add_arguments(sub, option_class)
    return parser


# Optional dependencies (pyproject.toml extras `curation` and `ray`): a missing one is named, not a traceback.
CURATION_EXTRAS = {"pyarrow", "img2dataset", "ahocorasick", "wordfreq", "imagehash", "matplotlib", "faiss", "ray"}


class Terminated(BaseException):
    """SIGTERM, raised where the program is, so every `finally` and child clean-up runs (not an Exception:
    no `except Exception` may swallow it)."""


def _terminate(signum: int, frame: object) -> None:
    raise Terminated


# A stopped download's img2dataset group is killed; the semaphores of its pool are then unlinked by this
# process's multiprocessing resource tracker, which also prints a warning about them after the one-line
# message. The clean-up is wanted, the warning is noise: the tracker (a child interpreter) takes -W options.
QUIET_TRACKER = "ignore::UserWarning:multiprocessing.resource_tracker"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    if QUIET_TRACKER not in sys.warnoptions:
        sys.warnoptions.append(QUIET_TRACKER)
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if in_main_thread else None
    try:
        return _run(args)
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)


def _run(args: argparse.Namespace) -> int:
    try:
        COMMANDS[args.command][2](args)
    except CurationError as error:
        print(f"curation {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"curation {args.command}: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    except Terminated:
        print(f"curation {args.command}: terminated; run the same command again to resume", file=sys.stderr)
        return 128 + signal.SIGTERM
    except ModuleNotFoundError as error:
        extra = "ray" if (error.name or "").startswith("ray") else "curation"
        if (error.name or "").split(".")[0] not in CURATION_EXTRAS:
            raise
        print(f"curation {args.command}: error: needs {error.name!r}, which this install lacks: "
              f"pip install 'clipmodule[{extra}]'", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
