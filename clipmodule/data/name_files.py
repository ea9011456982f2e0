"""Class-name and template files: one entry per line, or a built-in name for a list shipped as package data (read by
fit's zero-shot sets and by every eval command)."""

from __future__ import annotations

from pathlib import Path

from clipmodule.errors import ClipModuleError

ASSETS = Path(__file__).resolve().parents[1] / "assets"
# Named lists shipped as package data (OpenAI's, MIT: assets/LICENSE-openai-clip-imagenet-prompts.txt).
CLASSNAME_FILES = {"imagenet": ASSETS / "imagenet_classnames.txt"}


def read_lines(source: str, named: dict[str, Path], what: str) -> list[str]:
    """The non-empty stripped lines of the file `source` (or of `named[source]`); one line for a missing,
    unreadable or empty file."""
    path = named.get(source, Path(source))
    if not path.is_file():
        raise ClipModuleError(f"{source}: no such {what} file (or built-in name: {', '.join(named)})")
    try:
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    except (OSError, UnicodeDecodeError) as error:
        raise ClipModuleError(f"{source}: unreadable {what} file ({error})") from None
    lines = [line for line in lines if line]
    if not lines:
        raise ClipModuleError(f"{source}: empty {what} file")
    return lines
