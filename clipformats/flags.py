"""The one flag spelling of both CLIs outside LightningCLI: jsonargparse's, as `clipmodule fit` forces it — words
joined by `_`, groups by `.` (`--url_column`, `--loader.batch_size`, `--tracking.uri`).

Older spellings of a known flag (`--url-column`, `--loader.batch-size`, `--tracking-uri`, `--no-dedup-urls`, with or
without `=value`) are respelt to the canonical one with one deprecation line per old spelling on stderr; a flag
that is no spelling of a known one is left for the parser to refuse. Standard library only.
"""

from __future__ import annotations

import dataclasses
import sys
import types
import typing
from collections.abc import Callable, Iterable

NEGATION = "no_"
"""Prefix of a boolean's negation (`--overwrite` / `--no_overwrite`), as jsonargparse's yes/no flags."""


def flag_name(field_name: str) -> str:
    return "--" + field_name


def negation(flag: str) -> str:
    """`--dedup_urls` -> `--no_dedup_urls`."""
    return "--" + NEGATION + flag.removeprefix("--")


def _dataclass_of(hint: object) -> type | None:
    """The dataclass a field holds (`X` or `X | None`), else None."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        inner = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        hint = inner[0] if len(inner) == 1 else None
    return hint if isinstance(hint, type) and dataclasses.is_dataclass(hint) else None


def dataclass_flags(cls: type, prefix: str = "", groups: bool = True, negations: bool = False) -> list[str]:
    """The canonical flags of a dataclass's fields: `--field` (or the flags its metadata names), `--group.field`
    for a nested dataclass (`groups`; else nested dataclasses have no flags), `--no_field` for a bool
    (`negations`: argparse's yes/no flags; jsonargparse spells `--field false`)."""
    hints = typing.get_type_hints(cls)
    found: list[str] = []
    for field in dataclasses.fields(cls):
        nested = _dataclass_of(hints[field.name])
        if nested is not None:
            found += dataclass_flags(nested, f"{prefix}{field.name}.", groups, negations) if groups else []
            continue
        own = [flag for flag in field.metadata.get("flags", ()) if flag.startswith("--")]
        found += own or [flag_name(prefix + field.name)]
        if negations and hints[field.name] is bool:
            found.append(negation(flag_name(prefix + field.name)))
    return found


def loose(flag: str) -> str:
    """A flag with its separators forgotten: `--tracking-uri`, `--tracking.uri` and `--tracking_uri` are alike."""
    return flag.removeprefix("--").replace("-", "_").replace(".", "_")


def respell(argv: Iterable[str], flags: Iterable[str], prog: str,
            say: Callable[[str], None] | None = None) -> list[str]:
    """argv with every other spelling of a flag in `flags` replaced by that flag, told once per old spelling
    (`say`, default: a line on stderr). Flags that are no spelling of a known one, short flags, values and
    everything after `--` are left as they are; a spelling that two known flags share is left alone too."""
    say = say or (lambda line: print(line, file=sys.stderr))
    known = set(flags)
    by_loose: dict[str, set[str]] = {}
    for flag in known:
        by_loose.setdefault(loose(flag), set()).add(flag)
    told: set[str] = set()
    out: list[str] = []
    args = list(argv)
    for index, arg in enumerate(args):
        if arg == "--":
            return out + args[index:]
        flag, equals, value = arg.partition("=")
        matches = by_loose.get(loose(flag), set()) if flag.startswith("--") and flag not in known else set()
        if len(matches) != 1:
            out.append(arg)
            continue
        (canonical,) = matches
        if flag not in told:
            told.add(flag)
            say(f"{prog}: {flag} is spelt {canonical} now (the old spelling still works)")
        out.append(canonical + equals + value)
    return out
