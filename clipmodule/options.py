"""The one option machinery of `clipmodule`: jsonargparse, as LightningCLI uses for `fit`.

Every command's options are either a typed dataclass (`parse_dataclass`: field docstrings become `--help`,
`-c file.yaml` sets any of them) or a jsonargparse parser built by the command (`new_parser` + `parse`).
Either way a bad option or config file is one `ClipModuleError` line naming it.
"""

from __future__ import annotations

from typing import Any

from clipformats.files import UnreadableFile, read_yaml
from clipformats.flags import dataclass_flags, respell
from clipmodule.errors import ClipModuleError

CONFIG_FLAGS = ("-c", "--config")


def check_config_files(argv: list[str]) -> None:
    """Each `-c` file exists and holds a YAML mapping: one line naming the file, not a parser dump."""
    for flag, value in zip(argv, argv[1:]):
        if flag not in CONFIG_FLAGS:
            continue
        try:
            loaded = read_yaml(value)
        except UnreadableFile as error:
            raise ClipModuleError(str(error)) from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ClipModuleError(f"{value}: expected a mapping of options, got {type(loaded).__name__}")


def config_files(argv: list[str]) -> list[str]:
    return [value for flag, value in zip(argv, argv[1:]) if flag in CONFIG_FLAGS]


def new_parser(prog: str, description: str | None, config: bool = False):
    """A jsonargparse parser that raises instead of exiting; `config` adds `-c/--config` for YAML."""
    from jsonargparse import ActionConfigFile, ArgumentParser, set_parsing_settings

    set_parsing_settings(docstring_parse_attribute_docstrings=True)  # field docstrings become --help text
    parser = ArgumentParser(prog=prog, description=description, exit_on_error=False)
    if config:
        parser.add_argument(*CONFIG_FLAGS, action=ActionConfigFile, help="YAML file with any of these options")
    return parser


def parse(parser, argv: list[str], flags: list[str] | None = None) -> Any:
    """Parsed options (a jsonargparse Namespace); a bad option is one `ClipModuleError` line. Other spellings of
    `flags` (default: the parser's options) are respelt with a deprecation line (`clipformats.flags`)."""
    from argparse import ArgumentError

    check_config_files(argv)
    if flags is None:
        flags = [f"--{key}" for key in parser.get_defaults().keys()]  # noqa: SIM118 (a Namespace is not iterable)
    argv = respell(argv, flags, parser.prog)
    try:
        return parser.parse_args(argv)
    except ArgumentError as error:
        raise ClipModuleError(" ".join(line.strip() for line in str(error).splitlines() if line.strip())) from None


def parse_dataclass(command: type, prog: str, argv: list[str]) -> Any:
    """`command` (a dataclass) filled from argv and -c YAML files; bad options raise one line."""
    from argparse import ArgumentError

    parser = new_parser(prog, command.__doc__, config=True)
    parser.add_class_arguments(command)
    namespace = parse(parser, argv, dataclass_flags(command))
    try:
        parsed = parser.instantiate(namespace)
    except ArgumentError as error:
        raise ClipModuleError(" ".join(line.strip() for line in str(error).splitlines() if line.strip())) from None
    return command(**{key: value for key, value in vars(parsed).items() if key != "config"})
