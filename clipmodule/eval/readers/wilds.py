"""WILDS (Koh et al. 2021) in its release layout, as the `wilds` package reads it, with the per-image metadata
DataComp's metrics group by (`BenchmarkDataset.metadata`; `eval.subgroups`):

    iwildcam     iwildcam_v2.0/metadata.csv (split, filename, y, location_remapped, datetime…) + categories.csv
                 (y, name) + train/<filename>; splits train, val, test, id_val, id_test
    camelyon17   camelyon17_v1.0/metadata.csv (patient, node, x_coord, y_coord, tumor, slide, center, split) +
                 patches/patient_<p>_node_<n>/patch_patient_<p>_node_<n>_x_<x>_y_<y>.png; test is hospital 2, val
                 hospital 1, train/id_val the others' split 0/1 (WILDS's official scheme)
    fmow         fmow_v1.1/rgb_metadata.csv (split, category, country_code, timestamp) + country_code_mapping.csv
                 (alpha-3, region) + images/rgb_img_<row>.png; test: the test rows from 2016 on, val: the val rows
                 of 2013-2015, id_test/id_val/train: those rows before 2013; `seq` rows are sequestered (WILDS's
                 `time_after_2016` scheme); a country without a region is "Other"

DataComp reads the same test splits from its webdataset copies (`wds/wilds/<name>`, their `.npy` metadata).
"""

from __future__ import annotations

from pathlib import Path

from clipmodule.errors import ClipModuleError
from clipmodule.eval.readers.base import read_csv_rows, register
from clipmodule.eval.readers.items import BenchmarkDataset

# Camelyon17 ships no class names: CLIP_benchmark's PatchCamelyon names (the same task on the same kind of patch).
CAMELYON_CLASSES = ["lymph node", "lymph node containing metastatic tumor tissue"]
FMOW_CATEGORIES = (
    "airport", "airport_hangar", "airport_terminal", "amusement_park", "aquaculture", "archaeological_site",
    "barn", "border_checkpoint", "burial_site", "car_dealership", "construction_site", "crop_field", "dam",
    "debris_or_rubble", "educational_institution", "electric_substation", "factory_or_powerplant",
    "fire_station", "flooded_road", "fountain", "gas_station", "golf_course", "ground_transportation_station",
    "helipad", "hospital", "impoverished_settlement", "interchange", "lake_or_pond", "lighthouse",
    "military_facility", "multi-unit_residential", "nuclear_powerplant", "office_building",
    "oil_or_gas_facility", "park", "parking_lot_or_garage", "place_of_worship", "police_station", "port",
    "prison", "race_track", "railway_bridge", "recreational_facility", "road_bridge", "runway", "shipyard",
    "shopping_mall", "single-unit_residential", "smokestack", "solar_farm", "space_facility", "stadium",
    "storage_tank", "surface_mine", "swimming_pool", "toll_booth", "tower", "tunnel_opening", "waste_disposal",
    "water_treatment_facility", "wind_farm", "zoo",
)
SPLITS = ("train", "val", "test", "id_val", "id_test")


def _integer(path: Path, line: int, row: dict[str, str], column: str) -> int:
    try:
        return int(float(row[column]))
    except (TypeError, ValueError):
        raise ClipModuleError(f"{path}:{line}: {column} {row.get(column)!r} is not a number") from None


@register("wilds/iwildcam", splits=SPLITS, bases=("iwildcam_v2.0",), aliases=("iwildcam",),
          expected=lambda split: ["metadata.csv", "categories.csv", "train"],
          metric="top-1, macro F1 (DataComp's main), macro recall",
          layout="iwildcam_v2.0/metadata.csv + categories.csv + train/<filename>")
def open_iwildcam(folder: Path, split: str) -> BenchmarkDataset:
    names = {_integer(folder / "categories.csv", line, row, "y"): row["name"]
             for line, row in read_csv_rows(folder / "categories.csv", ("y", "name"))}
    rows = [(line, row) for line, row in read_csv_rows(folder / "metadata.csv", ("split", "filename", "y",
                                                                                   "location_remapped"))
            if row["split"] == split]
    path = folder / "metadata.csv"
    items = [(folder / "train" / row["filename"], _integer(path, line, row, "y")) for line, row in rows]
    count = max(names) + 1 if names else 0
    classnames = [names.get(label, str(label)) for label in range(count)]
    dataset = BenchmarkDataset("wilds/iwildcam", split, "zeroshot_classification", items, classnames, folder)
    dataset.metadata = {"location": [_integer(path, line, row, "location_remapped") for line, row in rows]}
    return dataset


CAMELYON_TEST_CENTER, CAMELYON_VAL_CENTER = 2, 1


def _camelyon_split(center: int, split_id: int) -> str:
    if center == CAMELYON_TEST_CENTER:
        return "test"
    if center == CAMELYON_VAL_CENTER:
        return "val"
    return "train" if split_id == 0 else "id_val"


@register("wilds/camelyon17", splits=("train", "id_val", "val", "test"), bases=("camelyon17_v1.0",),
          aliases=("camelyon17",), expected=lambda split: ["metadata.csv", "patches"],
          metric="top-1 (DataComp's main), worst-slide top-1",
          layout="camelyon17_v1.0/metadata.csv + patches/patient_<p>_node_<n>/*.png")
def open_camelyon17(folder: Path, split: str) -> BenchmarkDataset:
    path = folder / "metadata.csv"
    columns = ("patient", "node", "x_coord", "y_coord", "tumor", "slide", "center", "split")
    items, hospitals, slides = [], [], []
    for line, row in read_csv_rows(path, columns):
        center, slide = _integer(path, line, row, "center"), _integer(path, line, row, "slide")
        if _camelyon_split(center, _integer(path, line, row, "split")) != split:
            continue
        patient, node = row["patient"].zfill(3), _integer(path, line, row, "node")
        x, y = _integer(path, line, row, "x_coord"), _integer(path, line, row, "y_coord")
        patch = f"patient_{patient}_node_{node}"
        image = folder / "patches" / patch / f"patch_{patch}_x_{x}_y_{y}.png"
        items.append((image, _integer(path, line, row, "tumor")))
        hospitals.append(center)
        slides.append(slide)
    dataset = BenchmarkDataset("wilds/camelyon17", split, "zeroshot_classification", items, list(CAMELYON_CLASSES),
                               folder)
    dataset.metadata = {"hospital": hospitals, "slide": slides}
    return dataset


def _fmow_split(split: str, year: int) -> str | None:
    """The WILDS split of a row from its release split and year (None: sequestered or outside every split)."""
    if split == "seq":
        return None
    if year >= 2016:
        return "test" if split == "test" else None
    if year >= 2013:
        return "val" if split == "val" else None
    return {"test": "id_test", "val": "id_val", "train": "train"}.get(split)


@register("wilds/fmow", splits=SPLITS, bases=("fmow_v1.1",), aliases=("fmow",),
          expected=lambda split: ["rgb_metadata.csv", "country_code_mapping.csv", "images"],
          metric="top-1, worst-region top-1 (DataComp's main), worst-year top-1",
          layout="fmow_v1.1/rgb_metadata.csv + country_code_mapping.csv + images/rgb_img_<row>.png")
def open_fmow(folder: Path, split: str) -> BenchmarkDataset:
    mapping = folder / "country_code_mapping.csv"
    regions = {row["alpha-3"]: row["region"] for _, row in read_csv_rows(mapping, ("alpha-3", "region"))}
    path = folder / "rgb_metadata.csv"
    index = {name: label for label, name in enumerate(FMOW_CATEGORIES)}
    items, region_of, years = [], [], []
    for number, (line, row) in enumerate(read_csv_rows(path, ("split", "category", "country_code", "timestamp"))):
        year = _integer(path, line, {"year": row["timestamp"][:4]}, "year")
        if _fmow_split(row["split"], year) != split:
            continue
        if row["category"] not in index:
            raise ClipModuleError(f"{path}:{line}: category {row['category']!r} is not one of FMoW's 62")
        items.append((folder / "images" / f"rgb_img_{number}.png", index[row["category"]]))
        region_of.append(regions.get(row["country_code"], "Other"))
        years.append(year)
    names = [name.replace("_", " ") for name in FMOW_CATEGORIES]
    dataset = BenchmarkDataset("wilds/fmow", split, "zeroshot_classification", items, names, folder)
    dataset.metadata = {"region": region_of, "year": years}
    return dataset
