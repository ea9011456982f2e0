"""Face sets with demographic labels, in their release layouts, for DataComp's fairness protocol
(`tasks.attributes`): each image's target is [age bin, gender, race, race_binary] in DataComp's codes.

    fairface   fairface_label_{train,val}.csv (file, age, gender, race) + train/ val/ images; DataComp evaluates
               val (10,954 images)
    utkface    UTKFace/<age>_<gender>_<race>_<date>.jpg[.chip.jpg] (gender 0 male, 1 female; race 0 White, 1 Black,
               2 Asian, 3 Indian, 4 Others); a name that does not parse is refused (a few in the release do not)

The releases ship no prompts: give the `objective:name` class names and `objective:template` templates (DataComp's
copies `wds/fairness/fairface` and `wds/fairness/utkface` carry theirs) with `classnames:` and `templates:`.
Codes: gender male 0, female 1; race in DataComp's class order (FairFace: black, white, indian, latino, middle
eastern, southeast asian, east asian; UTKFace: black, white, indian, asian, other), white = 1; age in FairFace's
nine bins (0-2, 3-9, 10-19, …, 60-69, more than 70), UTKFace's ages put in them.
"""

from __future__ import annotations

from pathlib import Path

from clipmodule.errors import ClipModuleError
from clipmodule.eval.readers.base import image_files, read_csv_rows, register
from clipmodule.eval.readers.items import BenchmarkDataset

AGE_BINS = ("0-2", "3-9", "10-19", "20-29", "30-39", "40-49", "50-59", "60-69", "more than 70")
FAIRFACE_RACES = {"Black": 0, "White": 1, "Indian": 2, "Latino_Hispanic": 3, "Middle Eastern": 4,
                  "Southeast Asian": 5, "East Asian": 6}
UTKFACE_RACES = {0: 1, 1: 0, 2: 3, 3: 2, 4: 4}  # the release's code -> DataComp's class index
GENDERS = {"Male": 0, "Female": 1}


def age_bin(age: int) -> int:
    """FairFace's bin of an age in years."""
    edges = (3, 10, 20, 30, 40, 50, 60, 70)
    return next((index for index, edge in enumerate(edges) if age < edge), len(edges))


def _attributes(age: int, gender: int, race: int) -> list[int]:
    return [age, gender, race, 0 if race == 1 else 1]


@register("fairface", splits=("val", "train"), bases=("fairface",), aliases=("fairness/fairface",),
          expected=lambda split: [f"fairface_label_{split}.csv", split],
          metric="race/gender/age accuracy, white vs non-white gaps, gender by race x gender",
          layout="fairface_label_{train,val}.csv (file, age, gender, race) + train/ val/")
def open_fairface(folder: Path, split: str) -> BenchmarkDataset:
    path = folder / f"fairface_label_{split}.csv"
    items = []
    for line, row in read_csv_rows(path, ("file", "age", "gender", "race")):
        try:
            target = _attributes(AGE_BINS.index(row["age"]), GENDERS[row["gender"]], FAIRFACE_RACES[row["race"]])
        except (ValueError, KeyError):
            raise ClipModuleError(f"{path}:{line}: unknown age, gender or race ({row['age']!r}, {row['gender']!r}, "
                                  f"{row['race']!r})") from None
        items.append((folder / row["file"], target))
    return BenchmarkDataset("fairface", split, "attributes", items, None, folder)


def _utk_target(path: Path) -> list[int]:
    parts = path.name.split("_")
    try:
        age, gender, race = int(parts[0]), int(parts[1]), int(parts[2])
        if gender not in (0, 1):
            raise ValueError(gender)
        return _attributes(age_bin(age), gender, UTKFACE_RACES[race])
    except (ValueError, KeyError, IndexError):
        raise ClipModuleError(f"{path}: not an UTKFace name <age>_<gender 0|1>_<race 0-4>_<date>.jpg") from None


@register("utkface", splits=("all",), bases=("UTKFace", "utkface"), aliases=("fairness/utkface",),
          expected=lambda split: ["."], metric="race/gender/age accuracy, white vs non-white gaps",
          layout="UTKFace/<age>_<gender>_<race>_<date>.jpg.chip.jpg")
def open_utkface(folder: Path, split: str) -> BenchmarkDataset:
    items = [(path, _utk_target(path)) for path in image_files(folder)]
    if not items:
        raise ClipModuleError(f"utkface at {folder}: no images")
    return BenchmarkDataset("utkface", split, "attributes", items, None, folder)
