"""A sieve stage's fingerprint holds the content of its side inputs (unsafe's embeddings, concept embeddings or
model; in21k_text's class file; language's lid.176 model; every stage's truth table): a re-embed or an edited file
is refused as other settings, and re-decided with overwrite, never answered from stale decisions."""

from __future__ import annotations

import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation.errors import CurationError
from curation.stages.image_shape import ImageShapeConfig, ImageShapeSieve
from curation.stages.in21k_text import In21kTextConfig, In21kTextSieve
from curation.stages.language import LanguageConfig, LanguageSieve
from curation.stages.match.languages import model_file
from curation.stages.sieve import content_hash, run_sieve
from curation.stages.unsafe import UnsafeConfig, UnsafeSieve
from tests.curation.conftest import Sample, write_embedded

D = 8


def samples(cosines: list[float]) -> list[Sample]:
    """Images at these cosines to the first axis (the concept)."""
    vectors = [np.array([c, np.sqrt(1 - c * c)] + [0.0] * (D - 2)) for c in cosines]
    return [Sample(key=f"{i:09d}", image=v, text=np.ones(D), caption=f"a cat photo {i}", width=300, height=300)
            for i, v in enumerate(vectors)]


def refused_then_redone(sieve, config, shards, out, changed: str) -> dict:
    with pytest.raises(CurationError, match=rf"other settings \(side_inputs\.{changed}"):
        run_sieve(sieve, config, [str(shards)], out)
    return run_sieve(sieve, config, [str(shards)], out, overwrite=True)


def test_unsafe_reruns_after_a_re_embed_or_new_concept_embeddings(tmp_path):
    shards, embeddings = write_embedded(tmp_path, {"00000.tar": samples([0.9, 0.9, 0.1, 0.1])})
    np.save(tmp_path / "concepts.npy", np.eye(D)[:1].astype(np.float32))
    config = UnsafeConfig(embeddings=embeddings, concepts=["a gun"], thresholds=[0.5],
                          concept_embeddings=tmp_path / "concepts.npy")
    assert run_sieve(UnsafeSieve(config), config, [str(shards)], tmp_path / "safe")["rows_kept"] == 2
    _, again = write_embedded(tmp_path / "re", {"00000.tar": samples([0.9, 0.9, 0.9, 0.1])})  # re-embedded
    shutil.rmtree(embeddings)
    shutil.copytree(again, embeddings)
    assert refused_then_redone(UnsafeSieve(config), config, shards, tmp_path / "safe", "embeddings")["rows_kept"] == 1
    np.save(tmp_path / "concepts.npy", np.eye(D)[1:2].astype(np.float32))  # other prompts' embeddings, same path
    stats = refused_then_redone(UnsafeSieve(config), config, shards, tmp_path / "safe", "concepts")
    assert stats["rows_kept"] == 3  # only the 0.1 image lies near the second axis (cosine 0.99; the others 0.44)
    model = tmp_path / "model"  # a model folder: its files' content
    model.mkdir()
    (model / "weights.bin").write_bytes(b"1")
    by_model = UnsafeSieve(UnsafeConfig(embeddings=embeddings, concepts=["a gun"], model=str(model)))
    before = by_model.side_inputs(sorted(shards.glob("*.tar")))["concepts"]
    (model / "weights.bin").write_bytes(b"2")
    assert by_model.side_inputs(sorted(shards.glob("*.tar")))["concepts"] != before


def test_in21k_reruns_after_the_class_file_changes_and_any_stage_after_its_truth_changes(tmp_path):
    shards, _ = write_embedded(tmp_path, {"00000.tar": samples([0.1, 0.2])})
    (tmp_path / "classes.txt").write_text("n1\tdog\n")
    config = In21kTextConfig(classes=tmp_path / "classes.txt", skip_common=0)
    assert run_sieve(In21kTextSieve(config), config, [str(shards)], tmp_path / "in21k")["rows_kept"] == 0
    (tmp_path / "classes.txt").write_text("n1\tdog\nn2\tcat\n")  # edited in place
    assert refused_then_redone(In21kTextSieve(config), config, shards, tmp_path / "in21k", "classes")["rows_kept"] == 2
    truth = tmp_path / "truth.parquet"
    pq.write_table(pa.table({"shard": ["00000"], "key": ["000000000"]}), truth)
    shape = ImageShapeConfig(min_side=1, truth=truth)
    assert run_sieve(ImageShapeSieve(shape), shape, [str(shards)], tmp_path / "shape")["truth"]["recall"] == 0.0
    pq.write_table(pa.table({"shard": [], "key": []}, schema=pq.read_schema(truth)), truth)
    redone = refused_then_redone(ImageShapeSieve(shape), shape, shards, tmp_path / "shape", "truth")
    assert redone["truth"]["truth"] == 0


def test_language_fingerprints_the_model_file(tmp_path):
    sieve = LanguageSieve(LanguageConfig())
    assert model_file().is_file() and sieve.side_inputs([]) == {"model": content_hash([model_file()])}


def test_shard_stages_pass_on_their_inputs_row_identity(tmp_path):
    """What language/unsafe/..., filter, dedup and decontaminate record for online curation's check."""
    import json

    from curation.stages.sieve import inherited_identity

    for name, identity in (("a", "1" * 64), ("b", "1" * 64), ("c", "2" * 64)):
        (tmp_path / name).mkdir()
        (tmp_path / f"{name}.stats.json").write_text(json.dumps({"stage": "download", "rows_identity": identity}))
    assert inherited_identity([tmp_path / "a" / "0.tar", tmp_path / "b" / "1.tar"]) == {"rows_identity": "1" * 64}
    assert inherited_identity([tmp_path / "a" / "0.tar", tmp_path / "c" / "1.tar"]) == {}  # two origins: none
    assert inherited_identity([tmp_path / "d" / "0.tar"]) == {}  # no stats: none


def test_an_output_made_before_side_inputs_and_row_identity_stays_up_to_date_and_gains_the_identity(tmp_path):
    """An unchanged old image_shape output (no side inputs: none in its fingerprint) is not refused; its stats
    gain the row identity of its inputs (as an up-to-date `match` gains its own)."""
    import json

    shards, _ = write_embedded(tmp_path, {"00000.tar": samples([0.1, 0.2])})
    (tmp_path / f"{shards.name}.stats.json").write_text(json.dumps({"stage": "download", "rows_identity": "1" * 64}))
    shape = ImageShapeConfig(min_side=1)
    run_sieve(ImageShapeSieve(shape), shape, [str(shards)], tmp_path / "shape")
    stats_file = tmp_path / "shape.stats.json"
    old = json.loads(stats_file.read_text())
    old["fingerprint"].pop("side_inputs", None)  # as the version before side inputs and row identity wrote it
    old.pop("rows_identity")
    stats_file.write_text(json.dumps(old))
    assert run_sieve(ImageShapeSieve(shape), shape, [str(shards)], tmp_path / "shape")["rows_identity"] == "1" * 64
    assert json.loads(stats_file.read_text())["rows_identity"] == "1" * 64


def test_an_up_to_date_run_reads_no_side_input_again_and_survives_their_deletion(tmp_path, monkeypatch):
    """Each side input's sha256 is remembered by size, mtime and ctime in <out>.hashes.json: an up-to-date run
    does not read the embeddings again, and stays up to date once they are deleted."""
    import curation.stage

    shards, embeddings = write_embedded(tmp_path, {"00000.tar": samples([0.9, 0.1])})
    np.save(tmp_path / "concepts.npy", np.eye(D)[:1].astype(np.float32))
    config = UnsafeConfig(embeddings=embeddings, concepts=["a gun"], thresholds=[0.5],
                          concept_embeddings=tmp_path / "concepts.npy")
    first = run_sieve(UnsafeSieve(config), config, [str(shards)], tmp_path / "safe")
    assert (tmp_path / "safe.hashes.json").is_file()

    def no_reading(path, *args):
        raise AssertionError(f"{path} read again")

    monkeypatch.setattr(curation.stage, "sha256_file", no_reading)
    assert run_sieve(UnsafeSieve(config), config, [str(shards)], tmp_path / "safe") == first
    monkeypatch.undo()
    from curation.embedding_rows import embedding_files

    part = embedding_files(embeddings, [shards / "00000.tar"])[0]
    part.rename(part.with_name("moved"))  # an interrupted re-embed: the folder there, a part missing
    with pytest.raises(CurationError, match="missing"):
        run_sieve(UnsafeSieve(config), config, [str(shards)], tmp_path / "safe")
    shutil.rmtree(embeddings)
    assert run_sieve(UnsafeSieve(config), config, [str(shards)], tmp_path / "safe")["rows_kept"] == first["rows_kept"]
    with pytest.raises(CurationError, match="missing; embed these shards first"):  # a new output needs them
        run_sieve(UnsafeSieve(config), config, [str(shards)], tmp_path / "other")


def test_a_model_folder_is_hashed_by_the_files_the_loader_reads(tmp_path):
    from clipformats.model_files import OPEN_CLIP_CONFIG, OPEN_CLIP_WEIGHTS
    from clipmodule.checkpoints import open_clip

    assert (OPEN_CLIP_CONFIG, OPEN_CLIP_WEIGHTS) == (open_clip.CONFIG_NAME, open_clip.WEIGHT_NAMES)
    shards, embeddings = write_embedded(tmp_path, {"00000.tar": samples([0.9])})
    model = tmp_path / "model"
    model.mkdir()
    (model / OPEN_CLIP_CONFIG).write_text("{}")
    (model / OPEN_CLIP_WEIGHTS[0]).write_bytes(b"1")
    sieve = UnsafeSieve(UnsafeConfig(embeddings=embeddings, concepts=["a gun"], model=str(model)))
    before = sieve.side_inputs(sorted(shards.glob("*.tar")))["concepts"]
    (model / "training_log.txt").write_text("epoch 1")  # not read by the loader
    (model / "model.onnx").write_bytes(b"another format")
    assert sieve.side_inputs(sorted(shards.glob("*.tar")))["concepts"] == before
    (model / OPEN_CLIP_WEIGHTS[0]).write_bytes(b"2")
    assert sieve.side_inputs(sorted(shards.glob("*.tar")))["concepts"] != before
