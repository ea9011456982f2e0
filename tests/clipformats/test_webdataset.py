"""The shard contract: the rules curation writes by and every reader (fit, eval, decontaminate) reads by."""

from __future__ import annotations

import hashlib
import json

import pytest

from clipformats.webdataset import (
    ShardSpecError,
    content_hash,
    expand_braces,
    expand_shards,
    image_field,
    is_shard_spec,
    sample_label,
    shard_records,
    split_member_name,
)


def test_member_names_split_at_the_first_dot_of_the_file_name():
    assert split_member_name("000123.jpg") == ("000123", "jpg")
    assert split_member_name("part.v2/000123.Seg.PNG") == ("part.v2/000123", "seg.png")
    assert split_member_name("README") == ("README", "")


def test_the_image_is_the_first_image_field_in_contract_order():
    assert image_field(["txt", "png", "jpg"]) == "jpg"
    assert image_field(["txt", "tiff"]) == "tiff"
    assert image_field(["txt", "json"]) is None


def test_a_label_is_the_cls_field_or_the_json_label_and_garbage_is_an_error():
    assert sample_label({"cls": b" 7\n", "json": b'{"label": 3}'}) == 7
    assert sample_label({"json": b'{"label": 3}'}) == 3
    assert sample_label({"json": b'{"caption": "a cat"}'}) is None
    assert sample_label({"json": b"not json"}) is None
    assert sample_label({"txt": b"a cat"}) is None
    for fields in ({"cls": b"cat"}, {"json": b'{"label": "cat"}'}, {"json": b'{"label": true}'}):
        with pytest.raises(ValueError, match="is not an integer"):
            sample_label(fields)


def test_brace_patterns_expand_like_webdataset_specs():
    assert expand_braces("s/{00008..00011}.tar") == [f"s/{n:05d}.tar" for n in range(8, 12)]
    assert expand_braces("{train,val}-{1..2}.tar") == ["train-1.tar", "train-2.tar", "val-1.tar", "val-2.tar"]
    assert expand_braces("{a..e..2}{x}") == ["a{x}", "c{x}", "e{x}"]
    with pytest.raises(ShardSpecError, match="unbalanced"):
        expand_braces("s/{0..3.tar")


def test_a_spec_names_folders_patterns_globs_and_lists_and_every_named_shard_must_exist(tmp_path):
    shards = [tmp_path / f"{n:05d}.tar" for n in range(3)]
    for shard in shards:
        shard.write_bytes(b"x")
    (tmp_path / ".00003.tar.tmp-1").write_bytes(b"half-written")
    (tmp_path / ".hidden.tar").write_bytes(b"x")
    names = [str(p) for p in shards]
    assert expand_shards(tmp_path) == names
    assert expand_shards(f"{tmp_path}/{{00000..00002}}.tar") == names
    assert expand_shards(f"{tmp_path}/*.tar") == names
    assert expand_shards([names[2], str(tmp_path / "00000.tar")]) == [names[2], names[0]]
    with pytest.raises(ShardSpecError, match="2 of 5 shards are missing, the first: .*00003.tar"):
        expand_shards(f"{tmp_path}/{{00000..00004}}.tar")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ShardSpecError, match="no .tar shards in directory .*empty"):
        expand_shards(tmp_path / "empty")
    assert is_shard_spec(str(tmp_path)) and is_shard_spec("x/{0..3}.tar") and not is_shard_spec(str(tmp_path / "empty"))


def test_content_hash_is_the_sha256_of_the_sorted_name_digest_lines(tmp_path):
    (tmp_path / "00001.tar").write_bytes(b"second")
    (tmp_path / "00000.tar").write_bytes(b"first")
    (tmp_path / "00000_stats.json").write_text(json.dumps({"successes": 4}))
    records = shard_records([tmp_path / "00001.tar", tmp_path / "00000.tar"])
    assert [r["samples"] for r in records] == [0, 4] and list(records[0]) == ["name", "samples", "bytes", "sha256"]
    lines = "".join(f"{name} {hashlib.sha256(data).hexdigest()}\n" for name, data in
                    (("00000.tar", b"first"), ("00001.tar", b"second")))
    assert content_hash(records) == hashlib.sha256(lines.encode()).hexdigest()
    assert shard_records([tmp_path / "00000.tar"], samples={"00000.tar": 9})[0]["samples"] == 9
