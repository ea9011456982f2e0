"""A class-list file with a duplicated, an extra or a stray line is refused in one line: it would shift the
names of every label after it (or add a class no image has), and zero-shot would score silently wrong."""

from __future__ import annotations

import pickle
import re

import numpy as np
import pytest

from clipmodule.errors import ClipModuleError
from clipmodule.eval.readers import open_dataset
from tests.clipmodule.eval.readers import copies
from tests.clipmodule.eval.readers.test_folders import write_cars, write_fgvc_aircraft, write_sun397

SUN_CASES = {
    "duplicate": ("/a/abbey\n/a/abbey\n/b/bakery/shop\n/z/zoo\n",
                  r"class '/a/abbey' is listed twice \(entries 1 and 2\)"),
    "extra": ("/a/abbey\n/a/airport\n/b/bakery/shop\n/z/zoo\n",
              r"1 of its 4 classes have no folder in the copy, the first: /a/airport"),
    "malformed": ("/a/abbey\nbakery/shop\n/z/zoo\n", r"line 'bakery/shop' is not '/<letter>/<class>'"),
}


@pytest.mark.parametrize("case", sorted(SUN_CASES))
@pytest.mark.parametrize("split", ["all", "test"])
def test_sun397_class_list_with_a_duplicated_or_extra_line_is_refused(tmp_path, case, split):
    write_sun397(tmp_path)
    listing = tmp_path / "SUN397" / "ClassName.txt"
    text, message = SUN_CASES[case]
    listing.write_text(text)
    with pytest.raises(ClipModuleError, match=re.escape(f"{listing}: ") + message):
        open_dataset("sun397", tmp_path, split)


@pytest.mark.parametrize("names", ["airplane\nairplane\nbird\ncar\n", "airplane\nbird\ncar\ncat\n"])
def test_stl10_class_names_with_a_duplicated_or_extra_line_are_refused(tmp_path, names):
    copies.write_stl10(tmp_path)
    listing = tmp_path / "stl10_binary" / "class_names.txt"
    listing.write_text(names)
    with pytest.raises(ClipModuleError, match=re.escape(f"{listing}: ") + "(class 'airplane' is listed twice|"
                       "lists 4 classes but the labels index only 3)"):
        open_dataset("stl10", tmp_path, "train")


def test_cifar_meta_with_a_name_twice_is_refused(tmp_path):
    copies.write_cifar10(tmp_path)
    meta = tmp_path / "cifar-10-batches-py" / "batches.meta"
    meta.write_bytes(pickle.dumps({"label_names": ["airplane", "airplane", "bird"]}, protocol=2))
    with pytest.raises(ClipModuleError, match=re.escape(f"{meta}: class 'airplane' is listed twice")):
        open_dataset("cifar10", tmp_path, "test")


@pytest.mark.parametrize("variants, message", [("707-320\nA300B4\nA300B4\nF/A-18\n", "class 'A300B4' is listed twice"),
                                               ("707-320\nA300B4\nBoeing\nF/A-18\n",
                                                "variant 'Boeing' is in none of the images_variant_")])
def test_fgvc_variants_with_a_duplicated_or_stray_line_are_refused(tmp_path, variants, message):
    write_fgvc_aircraft(tmp_path)
    listing = tmp_path / "fgvc-aircraft-2013b" / "data" / "variants.txt"
    listing.write_text(variants)
    with pytest.raises(ClipModuleError, match=re.escape(f"{listing}: {message}")):
        open_dataset("fgvc_aircraft", tmp_path, "test")


def test_cars_meta_with_a_name_twice_is_refused(tmp_path):
    from scipy.io import savemat

    write_cars(tmp_path)
    meta = tmp_path / "stanford_cars" / "devkit" / "cars_meta.mat"
    savemat(meta, {"class_names": np.array([["Acura RL Sedan 2012"] * 2 + ["Audi TT RS Coupe 2012"]], dtype=object)})
    with pytest.raises(ClipModuleError, match=re.escape(f"{meta}: class 'Acura RL Sedan 2012' is listed twice")):
        open_dataset("cars", tmp_path, "test")


def test_a_webdataset_multilabel_class_list_with_an_extra_line_is_refused(tmp_path):
    from tests.clipmodule.eval.readers.test_retrieval_wds import write_wds

    write_wds(tmp_path, "multilabel")
    (tmp_path / "classnames.txt").write_text("cat\ndog\nbird\nfish\n")
    with pytest.raises(ClipModuleError, match=r"0.tar:s0000000: its npy label vector has 3 entries but "
                                              r"classnames.txt lists 4 classes"):
        open_dataset("wds", tmp_path, "test")
