"""WinoGAViL (Bitton et al. 2022): a cue word, 5 to 12 candidate images, and the k of them people associated with
the cue. Read from the copy of its Hugging Face release (`nlphuji/winogavil`, the data DataComp evaluates):

    winogavil/winogavil_dataset.csv      columns candidates, cue, associations (lists of image names, as JSON
                                         or Python list literals), score_fool_the_ai, num_associations,
                                         annotation_index, num_candidates, solvers_jaccard_mean,
                                         solvers_jaccard_std, ID; one row per game
    winogavil/winogavil_images/<name>.jpg  one image per candidate name (`winogavil_images.zip`, unpacked)

(checked against the release's loading script, `winogavil.py` of the Hugging Face dataset: the CSV's lists are
JSON, the images `winogavil_images/<name>.jpg`; DataComp's `eval_utils/wino_eval.py` reads it through it). Where
the row states `num_associations` / `num_candidates`, they must agree with its lists.

`AssociationSet` holds each distinct image once (its items, read like any image set) and the games as indices
into them, so a model encodes an image once however many games show it (`tasks.association`).
"""

from __future__ import annotations

import ast
import json
import math
from dataclasses import dataclass
from pathlib import Path

from clipmodule.errors import ClipModuleError
from clipmodule.eval.readers.base import read_csv_rows, register
from clipmodule.eval.readers.items import ImageItems

CSV, IMAGES = "winogavil_dataset.csv", "winogavil_images"


@dataclass(frozen=True)
class Game:
    """One game: the cue, its candidates (indices into the set's images) and which of them are associations
    (sorted)."""

    cue: str
    candidates: tuple[int, ...]
    associations: tuple[int, ...]


class AssociationSet(ImageItems):
    """The distinct images of the games (target: the image's index) and the games themselves."""

    task = "association"

    def __init__(self, items: list, games: list[Game], name: str, root: str, split: str):
        if not games:
            raise ClipModuleError(f"{name} at {root}: no games")
        super().__init__(items, name, None, None)
        self.games, self.root, self.split = games, root, split


def _names(path: Path, line: int, text: str, column: str) -> list[str]:
    for parse in (json.loads, ast.literal_eval):  # literal_eval reads literals only: no code runs
        try:
            value = parse(text)
        except (ValueError, SyntaxError, TypeError):
            continue
        if isinstance(value, list) and all(isinstance(item, str) for item in value):
            return value
    raise ClipModuleError(f"{path}:{line}: {column} is not a list of image names")


def _count(path: Path, line: int, column: str, stated: str) -> int:
    """A stated count, written as an integer or a whole float (`5`, `5.0`: pandas writes ints as floats)."""
    try:
        value = float(stated)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or not value.is_integer() or value < 0:
        raise ClipModuleError(f"{path}:{line}: {column} is {stated!r}, not a whole number")
    return int(value)


def _game(path: Path, line: int, row: dict[str, str], index: dict[str, int]) -> Game:
    candidates = _names(path, line, row["candidates"], "candidates")
    associations = _names(path, line, row["associations"], "associations")
    stray = [name for name in associations if name not in candidates]
    if stray or not associations or len(set(candidates)) != len(candidates):
        reason = f"association {stray[0]!r} is not a candidate" if stray else (
            "no associations" if not associations else "a candidate is listed twice")
        raise ClipModuleError(f"{path}:{line}: {reason}")
    for column, names in (("num_associations", associations), ("num_candidates", candidates)):
        stated = (row.get(column) or "").strip()
        if stated and _count(path, line, column, stated) != len(names):
            raise ClipModuleError(f"{path}:{line}: {column} is {stated} but the row lists {len(names)}")
    for name in candidates:
        index.setdefault(name, len(index))
    return Game(row["cue"].strip(), tuple(index[name] for name in candidates),
                tuple(sorted({index[name] for name in associations})))


@register("winogavil", splits=("test",), bases=("winogavil",), aliases=("misc/winogavil",),
          expected=lambda split: [CSV, IMAGES], metric="Jaccard index of the chosen images (DataComp: 10-12 "
          "candidates)", layout=f"winogavil/{CSV} (cue, candidates, associations) + {IMAGES}/<name>.jpg")
def open_winogavil(folder: Path, split: str) -> AssociationSet:
    path = folder / CSV
    index: dict[str, int] = {}
    games = [_game(path, line, row, index) for line, row in read_csv_rows(path, ("cue", "candidates", "associations"))]
    missing = [name for name in index if not (folder / IMAGES / f"{name}.jpg").is_file()]
    if missing:
        raise ClipModuleError(f"winogavil at {folder}: {IMAGES}/ lacks {len(missing)} candidate image(s), e.g. "
                              f"{missing[0]}.jpg")
    items = [(folder / IMAGES / f"{name}.jpg", number) for name, number in index.items()]
    return AssociationSet(items, games, "winogavil", str(folder), split)
