"""The sample-filter stages (language, image_shape, in21k_text) on planted data: counts, examples, precision/recall."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation.errors import CurationError
from curation.stages import registry
from curation.stages.image_shape import ImageShapeConfig, ImageShapeSieve, shape_problem
from curation.stages.in21k_text import In21kTextConfig, In21kTextSieve, class_names
from curation.stages.language import LanguageConfig, LanguageSieve
from curation.stages.sieve import run_sieve
from tests.curation.conftest import Sample, shard_keys, write_shard

ENGLISH = ["a golden retriever running on the beach at sunset", "a red apple on a wooden kitchen table",
           "an old steam locomotive crossing a stone bridge", "a bowl of fresh strawberries in the morning light",
           "two children flying a kite in the park", "a cup of coffee next to an open laptop"]
OTHER = ["ein alter Zug fährt über eine steinerne Brücke im Herbst",
         "une tasse de café à côté d'un ordinateur portable", "un perro corriendo en la playa al atardecer",
         "一杯咖啡放在打开的笔记本电脑旁边",
         "старый паровоз едет по каменному мосту"]


def planted(tmp_path, captions_and_sides: list[tuple[str, int, int]], drop: set[int]):
    """Two shards of samples; `drop`: indices that should go, written as the truth table."""
    samples = [Sample(key=f"{i:09d}", image=np.zeros(2), text=np.zeros(2), caption=c, width=w, height=h)
               for i, (c, w, h) in enumerate(captions_and_sides)]
    folder = tmp_path / "shards"
    folder.mkdir()
    half = len(samples) // 2
    write_shard(folder / "00000.tar", samples[:half])
    write_shard(folder / "00001.tar", samples[half:])
    shard = ["00000" if i < half else "00001" for i in range(len(samples))]
    pq.write_table(pa.table({"shard": [shard[i] for i in sorted(drop)], "key": [f"{i:09d}" for i in sorted(drop)]}),
                   tmp_path / "truth.parquet")
    return folder


def kept_keys(folder) -> set[str]:
    return {key for path in sorted(folder.glob("*.tar")) for key in shard_keys(path)}


def test_language_keeps_english_with_perfect_precision_and_recall(tmp_path):
    captions = ENGLISH + OTHER + ["1234 5678"]
    shards = planted(tmp_path, [(c, 300, 300) for c in captions], drop=set(range(len(ENGLISH), len(captions))))
    config = LanguageConfig(keep=["en"], truth=tmp_path / "truth.parquet")
    stats = run_sieve(LanguageSieve(config), config, [str(shards)], tmp_path / "english")
    assert stats["rows_in"] == 12 and stats["rows_kept"] == 6
    assert stats["truth"]["precision"] == 1.0 and stats["truth"]["recall"] == 1.0
    assert {"language de", "language fr", "language es", "language ru", "language und"} <= set(
        stats["dropped_by_reason"])
    assert kept_keys(tmp_path / "english") == {f"{i:09d}" for i in range(6)}
    assert stats["examples"]["kept"][0]["caption"] == ENGLISH[0]
    section = registry().get("language").card
    assert "precision 1.0, recall 1.0" in section.markdown(section.section(stats))
    # a confidence floor of 0.5 also drops "a red apple on a wooden kitchen table" (lid.176: en at 0.41)
    floor = LanguageConfig(keep=["en"], min_score=0.5, truth=tmp_path / "truth.parquet")
    strict = run_sieve(LanguageSieve(floor), floor, [str(shards)], tmp_path / "confident")
    assert strict["dropped_by_reason"]["language score"] == 1 and strict["rows_kept"] == 5
    assert strict["truth"]["precision"] == pytest.approx(6 / 7) and strict["truth"]["recall"] == 1.0


def test_image_shape_drops_small_and_elongated_images(tmp_path):
    sides = [(300, 300), (199, 800), (800, 199), (900, 250), (250, 700), (640, 480), (1000, 333), (2000, 2000)]
    should_go = {1, 2, 3}  # a side under 200, or longer/shorter over 3 (700/250 = 2.8 stays; 1000/333 = 3.003 goes)
    should_go.add(6)
    shards = planted(tmp_path, [(f"photo {i}", w, h) for i, (w, h) in enumerate(sides)], drop=should_go)
    config = ImageShapeConfig(min_side=200, max_aspect_ratio=3.0, truth=tmp_path / "truth.parquet")
    stats = run_sieve(ImageShapeSieve(config), config, [str(shards)], tmp_path / "shaped")
    assert stats["dropped_by_reason"] == {"image side": 2, "aspect ratio": 2}
    assert stats["truth"]["precision"] == stats["truth"]["recall"] == 1.0
    assert shape_problem(None, 300, config) == "no image sides"
    with pytest.raises(CurationError, match="max_aspect_ratio"):
        ImageShapeConfig(max_aspect_ratio=0.5)


def test_in21k_text_keeps_captions_naming_a_class(tmp_path):
    names = class_names(None)
    assert len(names) > 30000 and "golden retriever" in names and "steam locomotive" in names
    captions = ENGLISH + ["click here to download now", "free shipping on all orders today", "4k 1080p hd", "IMG 2041"]
    shards = planted(tmp_path, [(c, 300, 300) for c in captions], drop=set(range(len(ENGLISH), len(captions))))
    config = In21kTextConfig(truth=tmp_path / "truth.parquet")
    stats = run_sieve(In21kTextSieve(config), config, [str(shards)], tmp_path / "in21k")
    # "shipping" is one of ImageNet-21k's lemmas, so that spam caption stays: the text filter's known leak
    assert stats["dropped_by_reason"] == {"no ImageNet-21k class": 3}
    assert stats["truth"]["precision"] == 1.0 and stats["truth"]["recall"] == pytest.approx(3 / 4)
    again = run_sieve(In21kTextSieve(config), config, [str(shards)], tmp_path / "in21k")
    assert again == json.loads((tmp_path / "in21k.stats.json").read_text())  # up to date: not redone


def test_in21k_text_reads_a_given_class_file(tmp_path):
    (tmp_path / "classes.txt").write_text("n01\tcat, house_cat\nteapot\n")
    assert class_names(tmp_path / "classes.txt") == ["cat", "house cat", "teapot"]
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(CurationError, match="no class names"):
        class_names(tmp_path / "empty.txt")


def test_unsafe_drops_images_near_a_concept_by_its_own_threshold(tmp_path):
    from clipformats.embeddings import normalise
    from curation.stages import dataset_config_type
    from curation.stages.unsafe import UnsafeConfig, UnsafeSieve
    from curation.typed import from_mapping
    from tests.curation.conftest import write_embedded

    rng, d = np.random.default_rng(0), 16
    weapon, gore = np.eye(d)[0], np.eye(d)[1]

    def near(concept, cosine):  # a unit vector at this cosine from the concept, the rest in random other directions
        other = rng.normal(size=d)
        other[:2] = 0
        return cosine * concept + np.sqrt(1 - cosine**2) * normalise(other)

    images = [near(weapon, 0.8) for _ in range(6)] + [near(gore, 0.7) for _ in range(4)] + \
             [near(gore, 0.95) for _ in range(2)] + [near(weapon, 0.1) for _ in range(12)]
    samples = [Sample(key=f"{i:09d}", image=v, text=np.ones(d), caption=f"photo {i}") for i, v in enumerate(images)]
    shards, embeddings = write_embedded(tmp_path, {"00000.tar": samples[:12], "00001.tar": samples[12:]})
    np.save(tmp_path / "concepts.npy", np.stack([weapon, gore]).astype(np.float32))
    should_go = list(range(12))  # everything near a concept was planted as unsafe
    pq.write_table(pa.table({"shard": ["00000"] * 12, "key": [f"{i:09d}" for i in should_go]}),
                   tmp_path / "truth.parquet")
    config = UnsafeConfig(embeddings=embeddings, concepts=["a photo of a weapon", "a gory photo"],
                          thresholds=[0.5, 0.9], concept_embeddings=tmp_path / "concepts.npy",
                          truth=tmp_path / "truth.parquet")
    stats = run_sieve(UnsafeSieve(config), config, [str(shards)], tmp_path / "safe")
    # gore's stricter threshold (0.9) lets its 0.7-cosine images through: recall 8/12, precision 1
    assert stats["dropped_by_reason"] == {"unsafe: a photo of a weapon": 6, "unsafe: a gory photo": 2}
    assert stats["truth"]["precision"] == 1.0 and stats["truth"]["recall"] == pytest.approx(8 / 12)
    with pytest.raises(CurationError, match="one of them"):
        UnsafeConfig(concepts=["x"])
    with pytest.raises(CurationError, match="unsafe: needs the embed stage"):
        from_mapping(dataset_config_type(), {"name": "x", "captions": ["c.parquet"],
                                             "unsafe": {"concepts": ["a"], "model": "m"}}, "dataset")
    with pytest.raises(CurationError, match="one per concept"):
        UnsafeConfig(concepts=["x", "y", "z"], thresholds=[0.2, 0.3], model="m")
