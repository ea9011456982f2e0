"""`curation <stage>`: a thin CLI. Every option comes from a dataclass field (its docstring is the help), and
each command imports its heavy modules (pyarrow, img2dataset, matplotlib) only when it runs, so
`curation --help` answers at once. Bad input ends with one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from clipformats.commands import Command, dispatch, usage
from clipformats.flags import dataclass_flags, respell
from curation.errors import CurationError
from curation.stages import StageSpec, dataset_config_type, registry
from curation.typed import add_arguments, from_namespace, load_yaml


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
    """Dataset YAML (see experiments/datasets/): runs queries, match, balance, download, the optional stages it
    names and the card, in order."""
    overwrite: bool = False
    """Rebuild stages whose settings changed (stages that are up to date are skipped)."""


DESCRIPTION = ("Dataset curation for CLIP-style pretraining: queries → match → balance → download → the optional "
               "stages listed below → card (or all of them: build).")


def _card(args: argparse.Namespace) -> None:
    from curation.cards import write_card

    card = from_namespace(CardArgs, args)
    write_card(card.name, card.work_dir, card.cards_dir)


def _build(args: argparse.Namespace) -> None:
    from curation.pipeline import build

    options = from_namespace(BuildArgs, args)
    build(load_yaml(options.config, dataset_config_type()), options.overwrite)


def _stage_runner(stage: StageSpec) -> Callable[[argparse.Namespace], None]:
    def run(args: argparse.Namespace) -> None:
        settings = None if stage.settings is None else from_namespace(stage.settings, args)
        stage.run(settings, from_namespace(stage.paths, args))

    return run


@dataclass(frozen=True)
class CurationCommand:
    """One subcommand: its help line, the dataclasses its options come from, what it runs."""

    name: str
    help: str
    options: tuple[type, ...]
    run: Callable[[argparse.Namespace], None]

    def parser(self) -> argparse.ArgumentParser:
        parser = OptionParser(prog=f"curation {self.name}", description=self.help[0].upper() + self.help[1:] + ".")
        for option_class in self.options:
            add_arguments(parser, option_class)
        return parser

    def __call__(self, argv: list[str]) -> None:
        flags = [flag for options in self.options for flag in dataclass_flags(options, groups=False, negations=True)]
        self.run(self.parser().parse_args(respell(argv, flags, f"curation {self.name}")))


class OptionParser(argparse.ArgumentParser):
    """A bad option is one CurationError line (`curation <command>: error: ...`), not the usage text."""

    def error(self, message: str) -> typing.NoReturn:
        raise CurationError(f"{message} (see `{self.prog} --help`)")


def curation_commands() -> list[CurationCommand]:
    """Every registered stage, then `card` and `build`."""
    found = [CurationCommand(stage.name, stage.help, stage.options(), _stage_runner(stage)) for stage in registry()]
    found.append(CurationCommand("card", "write the data card from the stages' stats", (CardArgs,), _card))
    found.append(CurationCommand("build", "run every stage of a dataset YAML in order, skipping finished ones",
                                 (BuildArgs,), _build))
    return found


def commands() -> list[Command]:
    return [Command(command.name, command.help, command) for command in curation_commands()]


def help_text() -> str:
    """`curation --help`."""
    return usage("curation", commands(), DESCRIPTION)


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
    argv = list(sys.argv[1:] if argv is None else argv)
    if QUIET_TRACKER not in sys.warnoptions:
        sys.warnoptions.append(QUIET_TRACKER)
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if in_main_thread else None
    try:
        return dispatch("curation", commands(), argv, DESCRIPTION, run=_run)
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)


def _run(command: Command, argv: list[str]) -> int:
    name = command.name
    try:
        command.runner()(argv)
    except CurationError as error:
        print(f"curation {name}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"curation {name}: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    except Terminated:
        print(f"curation {name}: terminated; run the same command again to resume", file=sys.stderr)
        return 128 + signal.SIGTERM
    except ModuleNotFoundError as error:
        extra = "ray" if (error.name or "").startswith("ray") else "curation"
        if (error.name or "").split(".")[0] not in CURATION_EXTRAS:
            raise
        print(f"curation {name}: error: needs {error.name!r}, which this install lacks: "
              f"pip install 'clipmodule[{extra}]'", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
