"""The one subcommand dispatcher of both CLIs (`clipmodule <command>`, `clipmodule eval <command>`,
`clipmodule classifiers <command>`, `curation <stage>`): the usage text, an unknown command in one line, and the
command's own function called with the rest of the arguments. A command names its function as
`"package.module:function"` (imported only when it runs, so `--help` stays fast) or gives it directly.
Errors stay the caller's: each library turns its own into one line.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

Runner = Callable[[list[str]], "int | None"]
HELP_FLAGS = ("-h", "--help")


@dataclass(frozen=True)
class Command:
    """One subcommand."""

    name: str
    help: str
    """One line for the usage text."""
    target: str | Runner
    """`"package.module:function"` taking the remaining arguments (a list of str), or that function."""

    def runner(self) -> Runner:
        if callable(self.target):
            return self.target
        module, _, function = self.target.partition(":")
        return getattr(importlib.import_module(module), function)


def usage(prog: str, commands: Sequence[Command], description: str = "") -> str:
    lines = [f"usage: {prog} <command> [options]", ""]
    lines += [description, ""] if description else []
    lines.append("commands:")
    width = max(len(command.name) for command in commands) + 2
    lines += [f"  {command.name:<{width}}{command.help}" for command in commands]
    lines += ["", f"`{prog} <command> --help` shows the options of one command."]
    return "\n".join(lines)


def dispatch(prog: str, commands: Sequence[Command], argv: list[str], description: str = "",
             run: Callable[[Command, list[str]], int] | None = None) -> int:
    """Print the usage (no command, -h, --help: exit 0), refuse an unknown command in one line (exit 2), else
    run the command (`run(command, rest)` when given: the caller's error handling around `command.runner()`)."""
    if not argv or argv[0] in HELP_FLAGS:
        print(usage(prog, commands, description))
        return 0
    by_name = {command.name: command for command in commands}
    name, rest = argv[0], list(argv[1:])
    if name not in by_name:
        print(f"{prog}: unknown command {name!r} (known: {', '.join(by_name)})", file=sys.stderr)
        return 2
    if run is not None:
        return run(by_name[name], rest)
    return int(by_name[name].runner()(rest) or 0)
