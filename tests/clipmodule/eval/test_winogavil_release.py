"""WinoGAViL's release CSV with every column it ships (the Hugging Face loading script's order) reads as the games;
counts that disagree with the row's lists are one line."""

from __future__ import annotations

import csv
import json

import pytest
from PIL import Image

from clipmodule.errors import ClipModuleError
from clipmodule.eval.readers import open_dataset

COLUMNS = ["candidates", "cue", "associations", "score_fool_the_ai", "num_associations", "annotation_index",
           "num_candidates", "solvers_jaccard_mean", "solvers_jaccard_std", "ID"]


def _release(root, num_associations=2):
    base = root / "winogavil"
    (base / "winogavil_images").mkdir(parents=True)
    candidates = ["bison", "shelter", "beard", "flea", "cattle"]
    for number, name in enumerate(candidates):
        Image.new("RGB", (16, 16), (40 * number, 0, 0)).save(base / "winogavil_images" / f"{name}.jpg", format="jpeg")
    with (base / "winogavil_dataset.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        writer.writerow([json.dumps(candidates), "pogonophile", json.dumps(["bison", "beard"]), 0.0, num_associations,
                         3, 5, 100.0, 0.0, 17])
    return base


def test_the_release_csv_reads_as_games(tmp_path):
    dataset = open_dataset("winogavil", _release(tmp_path))
    (game,) = dataset.games
    assert game.cue == "pogonophile" and len(game.candidates) == 5 and len(game.associations) == 2
    names = [path.stem for path, _ in dataset.items]
    assert [names[index] for index in game.associations] == ["bison", "beard"]


def test_a_count_that_disagrees_with_the_lists_is_one_line(tmp_path):
    with pytest.raises(ClipModuleError, match=r"winogavil_dataset.csv:2: num_associations is 3 but the row lists 2"):
        open_dataset("winogavil", _release(tmp_path, num_associations=3))


@pytest.mark.parametrize("stated", ["2.0", "2.00", " 2 ", "2e0"])
def test_a_count_written_as_a_whole_float_reads_as_its_number(tmp_path, stated):
    assert len(open_dataset("winogavil", _release(tmp_path, num_associations=stated)).games) == 1


@pytest.mark.parametrize(("stated", "message"), [
    ("20.0", "num_associations is 20.0 but the row lists 2"), ("1.02", "num_associations is '1.02', not a whole"),
    ("two", "num_associations is 'two', not a whole number"), ("nan", "num_associations is 'nan', not a whole")])
def test_a_count_that_is_not_the_lists_whole_number_is_one_line(tmp_path, stated, message):
    with pytest.raises(ClipModuleError, match=rf"winogavil_dataset.csv:2: {message}"):
        open_dataset("winogavil", _release(tmp_path, num_associations=stated))
