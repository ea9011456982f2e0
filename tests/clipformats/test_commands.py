"""The one subcommand dispatcher and the one flag spelling, as both CLIs use them."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass, field

import pytest

from clipformats.commands import Command, dispatch, usage
from clipformats.flags import dataclass_flags, respell

CALLS: list[list[str]] = []


def record(argv: list[str]) -> int:
    CALLS.append(argv)
    return 3


COMMANDS = [Command("fit", "train a model", record), Command("linear-probe", "probe features", "json:dumps")]


def test_usage_lists_every_command_in_order_with_its_line():
    text = usage("tool", COMMANDS, "A tool.")
    assert text.splitlines()[0] == "usage: tool <command> [options]" and "A tool." in text
    assert text.index("  fit           train a model") < text.index("  linear-probe  probe features")


@pytest.mark.parametrize("argv", [[], ["-h"], ["--help"]])
def test_no_command_or_help_prints_the_usage_and_exits_0(argv, capsys):
    assert dispatch("tool", COMMANDS, argv) == 0
    assert "linear-probe" in capsys.readouterr().out


def test_unknown_command_is_one_line_and_exit_2(capsys):
    assert dispatch("tool", COMMANDS, ["fitt", "--x"]) == 2
    captured = capsys.readouterr()
    assert captured.err.splitlines() == ["tool: unknown command 'fitt' (known: fit, linear-probe)"] and not captured.out


def test_a_command_gets_the_rest_of_the_arguments_and_its_exit_code_is_returned():
    CALLS.clear()
    assert dispatch("tool", COMMANDS, ["fit", "--a", "1", "-h"]) == 3
    assert CALLS == [["--a", "1", "-h"]]


def test_a_named_target_is_imported_only_when_it_runs_and_run_wraps_it():
    code = ("import sys; from clipformats.commands import Command; Command('x', 'y', 'xml.dom.minidom:parse'); "
            "print('xml.dom.minidom' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False\n"
    seen = []
    assert dispatch("tool", COMMANDS, ["linear-probe", "a"], run=lambda c, rest: seen.append((c.name, rest)) or 5) == 5
    assert seen == [("linear-probe", ["a"])] and COMMANDS[1].runner()([1]) == "[1]"


def test_the_neutral_modules_import_neither_library():
    code = ("import sys, clipformats.commands, clipformats.flags; "
            "print([m for m in sys.modules if m.split('.')[0] in ('clipmodule', 'curation')])")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "[]\n"


@dataclass
class Loader:
    batch_size: int = 8
    num_workers: int | None = None


@dataclass
class Tracking:
    uri: str = "sqlite:///x.db"


@dataclass
class Options:
    url_column: str = "url"
    dedup_urls: bool = False
    config: str = field(default="", metadata={"flags": ("-c", "--config")})
    loader: Loader = field(default_factory=Loader)
    tracking: Tracking | None = None


def test_canonical_flags_come_from_fields_and_nested_groups():
    assert dataclass_flags(Options) == ["--url_column", "--dedup_urls", "--config", "--loader.batch_size",
                                        "--loader.num_workers", "--tracking.uri"]
    assert dataclass_flags(Options, groups=False, negations=True) == [
        "--url_column", "--dedup_urls", "--no_dedup_urls", "--config"]


def said(argv: list[str], flags: list[str]) -> tuple[list[str], list[str]]:
    lines: list[str] = []
    return respell(argv, flags, "tool run", say=lines.append), lines


def test_old_spellings_are_respelt_with_one_line_per_old_spelling():
    flags = dataclass_flags(Options, negations=True)
    argv, lines = said(["--url-column", "u", "--loader.batch-size=4", "--tracking-uri", "none", "--url-column=v",
                        "--no-dedup-urls", "--tracking_uri", "x"], flags)
    assert argv == ["--url_column", "u", "--loader.batch_size=4", "--tracking.uri", "none", "--url_column=v",
                    "--no_dedup_urls", "--tracking.uri", "x"]
    assert lines == ["tool run: --url-column is spelt --url_column now (the old spelling still works)",
                     "tool run: --loader.batch-size is spelt --loader.batch_size now (the old spelling still works)",
                     "tool run: --tracking-uri is spelt --tracking.uri now (the old spelling still works)",
                     "tool run: --no-dedup-urls is spelt --no_dedup_urls now (the old spelling still works)",
                     "tool run: --tracking_uri is spelt --tracking.uri now (the old spelling still works)"]


def test_canonical_unknown_short_and_values_are_left_alone():
    argv = ["--url_column", "--no-such-flag", "-c", "--url-column", "a-b", "--", "--url-column"]
    out, lines = said(argv, dataclass_flags(Options))
    assert out == ["--url_column", "--no-such-flag", "-c", "--url_column", "a-b", "--", "--url-column"]
    assert len(lines) == 1


def test_a_spelling_two_flags_share_is_left_to_the_parser():
    assert said(["--a-b", "1"], ["--a_b", "--a.b"]) == (["--a-b", "1"], [])
