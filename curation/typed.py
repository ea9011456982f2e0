"""Dataclasses as the single source of settings: strict loading from YAML mappings, argparse options from fields.

Supported field types: bool, int, float, str, Path, Literal[...], list[str], `X | None`, nested dataclasses.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import inspect
import textwrap
import types
import typing
from pathlib import Path
from typing import Any

from clipformats.files import UnreadableFile, read_yaml
from clipformats.flags import flag_name, negation
from curation.errors import CurationError

MISSING = dataclasses.MISSING


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """The docstring written under each field of a dataclass (read from its source, and its dataclass bases')."""
    docs = {}
    for base in reversed(cls.__mro__[1:]):
        if dataclasses.is_dataclass(base):
            docs.update(field_docs(base))
    return {**docs, **_own_field_docs(cls)}


def _own_field_docs(cls: type) -> dict[str, str]:
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs = {}
    for statement, following in zip(body, body[1:]):
        if (isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name)
                and isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant)
                and isinstance(following.value.value, str)):
            docs[statement.target.id] = " ".join(following.value.value.split())
    return docs


def _optional_inner(hint: Any) -> tuple[Any, bool]:
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in args:
        inner = [a for a in args if a is not type(None)]
        return inner[0], True
    return hint, False


def _convert(value: Any, hint: Any, where: str) -> Any:
    hint, optional = _optional_inner(hint)
    if value is None:
        if optional:
            return None
        raise CurationError(f"{where}: a value is required")
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return from_mapping(hint, value, where)
    if origin is typing.Literal:
        if value not in typing.get_args(hint):
            raise CurationError(f"{where}: {value!r} is not one of {', '.join(map(str, typing.get_args(hint)))}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise CurationError(f"{where}: expected a list, got {value!r}")
        (item,) = typing.get_args(hint)
        return [_convert(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    expected = {bool: (bool,), int: (int,), float: (int, float), str: (str,), Path: (str,)}[hint]
    if not isinstance(value, expected) or (hint is not bool and isinstance(value, bool)):
        raise CurationError(f"{where}: expected {hint.__name__}, got {value!r}")
    return hint(value)


def from_mapping(cls: type, data: Any, where: str) -> Any:
    """Build dataclass `cls` from a mapping, refusing unknown keys and wrong types (errors name `where`)."""
    if not isinstance(data, dict):
        raise CurationError(f"{where}: expected a mapping of settings, got {data!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise CurationError(f"{where}: unknown setting {unknown[0]!r} (known: {', '.join(known)})")
    values = {}
    for name, spec in known.items():
        if name in data:
            values[name] = _convert(data[name], hints[name], f"{where}.{name}")
        elif spec.default is MISSING and spec.default_factory is MISSING:
            raise CurationError(f"{where}: missing required setting {name!r}")
    try:
        return cls(**values)
    except CurationError as error:
        raise CurationError(f"{where}: {error}") from None


def load_yaml(path: Path, cls: type) -> Any:
    """Read a YAML file into dataclass `cls`; every problem is a one-line CurationError naming the file."""
    try:
        data = read_yaml(path)
    except UnreadableFile as error:
        raise CurationError(str(error).replace("malformed YAML", "invalid YAML")) from None
    return from_mapping(cls, data, str(path))


class YesNo(argparse.Action):
    """`--flag` / `--no_flag`: argparse's BooleanOptionalAction spells the negation `--no-flag`, which is not
    the one flag style (`clipformats.flags`)."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        self.negations = [negation(flag) for flag in option_strings if flag.startswith("--")]
        super().__init__([*option_strings, *self.negations], dest, nargs=0, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        setattr(namespace, self.dest, option_string not in self.negations)

    def format_usage(self) -> str:
        return " | ".join(self.option_strings)


def add_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """One `--option` per field of `cls` (nested dataclasses are skipped), spelt as its field (the one flag
    style, `clipformats.flags`), help text from its docstring."""
    hints, docs = typing.get_type_hints(cls), field_docs(cls)
    for spec in dataclasses.fields(cls):
        hint, optional = _optional_inner(hints[spec.name])
        if dataclasses.is_dataclass(hint):
            continue
        flags = spec.metadata.get("flags", (flag_name(spec.name),))
        kwargs: dict[str, Any] = {"dest": spec.name, "help": docs.get(spec.name, "")}
        if spec.default is not MISSING:
            kwargs["default"] = spec.default
            kwargs["help"] += " (default: %(default)s)"
        elif spec.default_factory is not MISSING:
            kwargs["default"] = spec.default_factory()
        else:
            kwargs["required"] = True
        origin = typing.get_origin(hint)
        if hint is bool:
            kwargs["action"] = YesNo
        elif origin is typing.Literal:
            kwargs["choices"] = typing.get_args(hint)
        elif origin is list:
            kwargs.update(nargs="*" if optional or "default" in kwargs else "+", type=typing.get_args(hint)[0])
        else:
            kwargs["type"] = hint
        parser.add_argument(*flags, **kwargs)


def from_namespace(cls: type, namespace: argparse.Namespace) -> Any:
    """The dataclass `cls` from parsed options (its `__post_init__` checks the values)."""
    return cls(**{f.name: getattr(namespace, f.name) for f in dataclasses.fields(cls) if hasattr(namespace, f.name)})
