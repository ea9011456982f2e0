"""Class names and prompts as data: checked lists of names, templates with one slot, class-specific prompts,
and the files they are read from (`read_classnames`, `read_templates`: a file or a built-in name).

    templates      "a photo of a {}." or "a photo of a {c}.": exactly one slot for the class name
    class prompts  a CuPL-style dict {class name: [prompt, …]}: each class's own texts, used as written
                   (a slot in one is filled with the class name)

Kept free of torch, so the CLIs check their inputs before any model is loaded.
"""

from __future__ import annotations

import json
import string
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from clipmodule.data.name_files import ASSETS, CLASSNAME_FILES, read_lines
from clipmodule.errors import ClipModuleError, one_line

SLOT_NAMES = ("", "c")
"""`{}` and `{c}` both stand for the class name."""

Prompts = Sequence[str] | Mapping[str, Sequence[str]]
"""Templates shared by every class, or class-specific prompt lists."""

TEMPLATE_FILES = {"imagenet": ASSETS / "imagenet_templates.txt"}
SIMPLE_TEMPLATES = ["a photo of a {}."]


def name_list(names: Iterable[str], what: str = "classnames") -> list[str]:
    """`names` as a list of non-empty str; one str (which would be read as its characters), bytes, a
    non-str or an empty item is a one-line error naming `what`."""
    if isinstance(names, (str, bytes)):
        raise ClipModuleError(f"{what} must be a list of str, not one {type(names).__name__} {names!r:.60}: "
                              f"pass [{names!r:.60}] for a single entry")
    try:
        names = list(names)
    except TypeError:
        raise ClipModuleError(f"{what} must be a list of str, not a {type(names).__name__}") from None
    for index, name in enumerate(names):
        if not isinstance(name, str):
            raise ClipModuleError(f"{what}[{index}] is of type {type(name).__name__}, not str")
        if not name.strip():
            raise ClipModuleError(f"{what}[{index}] is empty")
    return names


def slot_count(template: str, where: str) -> int:
    """How many class-name slots `template` has; a field other than `{}`/`{c}` or a stray brace is an error."""
    try:
        fields = [(name, spec, conversion) for _, name, spec, conversion in string.Formatter().parse(template)
                  if name is not None]
    except ValueError as error:  # a lone "{" or "}"
        raise ClipModuleError(f"{where}: template {template!r} is malformed ({error}); "
                              "write {{ and }} for literal braces") from None
    for name, spec, conversion in fields:
        if name not in SLOT_NAMES or spec or conversion:
            raise ClipModuleError(f"{where}: template {template!r} has a field {{{name}}} other than "
                                  "{} or {c} (the class name); write {{ and }} for literal braces")
    return len(fields)


def check_templates(templates: Iterable[str], where: str = "templates") -> list[str]:
    """Templates with exactly one class-name slot each, as a list; the first bad one is named."""
    templates = name_list(templates, where)
    if not templates:
        raise ClipModuleError(f"{where}: no templates")
    for template in templates:
        slots = slot_count(template, where)
        if slots != 1:
            count = f"{slots} slots" if slots else "no slot"
            raise ClipModuleError(f"{where}: template {template!r} has {count} for the class name; it needs "
                                  "exactly one {} (or {c})")
    return templates


def check_class_prompts(prompts: Mapping, where: str = "class prompts") -> dict[str, list[str]]:
    """A CuPL-style dict {class name: [prompt, …]} with str keys and at least one prompt per class."""
    if not isinstance(prompts, Mapping):
        raise ClipModuleError(f"{where}: class prompts must be a dict of class name -> list of prompts")
    checked = {}
    for name, texts in prompts.items():
        if not isinstance(name, str):
            raise ClipModuleError(f"{where}: class name {name!r} is not a str")
        texts = name_list(texts, f"{where}[{name!r}]")
        if not texts:
            raise ClipModuleError(f"{where}: class {name!r} has no prompts")
        for text in texts:
            if slot_count(text, where) > 1:
                raise ClipModuleError(f"{where}: prompt {text!r} has more than one slot for the class name")
        checked[name] = texts
    return checked


def fill(template: str, classname: str) -> str:
    """`template` with its slot (`{}` or `{c}`) replaced by `classname`; a text without a slot as written."""
    return template.format(classname, c=classname) if slot_count(template, "prompt") else template


def class_prompts(classnames: Sequence[str], prompts: Prompts, where: str = "templates") -> list[list[str]]:
    """The texts to embed for each class, in class order: every template filled with the class name, or the
    class's own prompts from a dict (a class the dict lacks is an error)."""
    classnames = name_list(classnames)
    if not classnames:
        raise ClipModuleError("classnames: no class names")
    if isinstance(prompts, Mapping):
        prompts = check_class_prompts(prompts, where)
        missing = [name for name in classnames if name not in prompts]
        if missing:
            raise ClipModuleError(f"{where}: no prompts for class {missing[0]!r} "
                                  f"({len(missing)} of {len(classnames)} classes missing)")
        return [[fill(text, name) for text in prompts[name]] for name in classnames]
    templates = check_templates(prompts, where)
    return [[fill(template, name) for template in templates] for name in classnames]


PROMPTS = "prompts"
"""Key of the class names and templates a zero-shot task prompted with, in its results (`prompt_record`)."""


def prompt_record(classnames: Sequence[str], prompts: Prompts) -> dict[str, list[str] | dict[str, list[str]]]:
    """What a zero-shot record states about its prompts: the class names in label order (class i is label i)
    and the templates, or the class-specific prompts as given."""
    if isinstance(prompts, Mapping):
        return {"classnames": list(classnames), "templates": {name: list(texts) for name, texts in prompts.items()}}
    return {"classnames": list(classnames), "templates": list(prompts)}


def read_classnames(source: str) -> list[str]:
    """Class names, one per line, from a file or a built-in name ("imagenet": the 1000 ImageNet classes)."""
    return read_lines(source, CLASSNAME_FILES, "class-name")


def read_templates(source: str) -> list[str] | dict[str, list[str]]:
    """Prompt templates with one "{}" (or "{c}") for the class name, one per line, from a file, "imagenet"
    (the paper's 80) or "simple"; or a .json file holding such a list, or a CuPL-style dict of class-specific
    prompts {class name: [prompt, …]}."""
    if source == "simple":
        return list(SIMPLE_TEMPLATES)
    if source.endswith(".json"):
        return _read_json_prompts(source)
    return check_templates(read_lines(source, TEMPLATE_FILES, "template"), source)


def _read_json_prompts(source: str) -> list[str] | dict[str, list[str]]:
    try:
        data = json.loads(Path(source).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ClipModuleError(f"{source}: no such template file") from None
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise ClipModuleError(f"{source}: unreadable JSON template file ({one_line(error)})") from None
    if isinstance(data, dict):
        return check_class_prompts(data, source)
    if isinstance(data, list):
        return check_templates(data, source)
    raise ClipModuleError(f"{source}: JSON templates are a list of templates or a dict of class name -> prompts")
