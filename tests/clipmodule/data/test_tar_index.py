"""The tar index read from headers alone: the same members as `tarfile`, damage reported, cached once."""

from __future__ import annotations

import io
import os
import tarfile

import pytest

from clipmodule.data.shards import ShardCache, index_shard
from clipmodule.data.tar_index import index_cache_path, read_index


def _tar(path, names, fmt=tarfile.PAX_FORMAT) -> list[tuple[str, int, int]]:
    """Writes members with the given names (random bytes of varied sizes); returns tarfile's view of them."""
    with tarfile.open(path, "w", format=fmt) as tar:
        for number, name in enumerate(names):
            data = os.urandom(300 + 700 * number)
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 1700000000.5  # a float mtime: webdataset's, it needs pax
            tar.addfile(info, io.BytesIO(data))
    with tarfile.open(path) as tar:
        return [(m.name, m.offset_data, m.size) for m in tar]


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT])
def test_index_has_the_members_tarfile_sees_in_every_format_with_long_names(tmp_path, fmt):
    deep = "d/" + "x" * 120 if fmt != tarfile.USTAR_FORMAT else "d/" + "x" * 90  # ustar: prefix + name only
    names = [f"{deep}/000001.jpg", f"{deep}/000001.txt", "000002.jpg", "000002.json"]
    expected = _tar(tmp_path / "a.tar", names)
    index = index_shard(str(tmp_path / "a.tar"))
    assert index.error is None and index.keys == [f"{deep}/000001", "000002"]
    got = [(f"{key}.{ext}", *where) for key, fields in zip(index.keys, index.members) for ext, where in fields.items()]
    assert got == expected
    assert index.spans[1] == (expected[2][1], expected[3][1] + expected[3][2])  # both fields in one read
    key, fields = ShardCache([str(tmp_path / "a.tar")]).read(0, 1)
    assert key == "000002" and len(fields["jpg"]) == expected[2][2] and len(fields["json"]) == expected[3][2]


def test_garbage_and_truncated_shards_report_the_damage_and_keep_what_came_before(tmp_path):
    garbage = tmp_path / "garbage.tar"
    garbage.write_bytes(b"this is not a tar file" * 100)
    assert "checksum" in index_shard(str(garbage)).error
    expected = _tar(tmp_path / "t.tar", ["1.jpg", "1.txt", "2.jpg", "2.txt"])
    cut = tmp_path / "cut.tar"
    cut.write_bytes((tmp_path / "t.tar").read_bytes()[: expected[3][1] + 10])  # into the last member's data
    index = index_shard(str(cut))
    assert index.keys == ["1", "2"] and list(index.members[1]) == ["jpg"] and "truncated at member 2.txt" in index.error
    assert index_shard(str(tmp_path / "missing.tar")).error


def test_a_shard_is_indexed_once_and_again_only_when_it_changes(tmp_path):
    path = tmp_path / "s.tar"
    _tar(path, ["1.jpg", "1.txt"])
    first = index_shard(str(path))
    stat = path.stat()
    cache_file = index_cache_path(str(path), stat.st_size, f"mtime_ns={stat.st_mtime_ns}")
    assert cache_file.is_file() and str(tmp_path) in str(cache_file)  # the test's own cache (conftest)
    cache_file.write_text(cache_file.read_text().replace('"1"', '"cached"'))
    assert index_shard(str(path)).keys == ["cached"]  # read from the cache, not the tar
    _tar(path, ["1.jpg", "1.txt", "2.jpg"])  # rewritten: new size and mtime, so indexed again
    assert index_shard(str(path)).keys == ["1", "2"] and first.keys == ["1"]
    cache_file.write_text("{not json")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert index_shard(str(path)).keys == ["1", "2"]  # a damaged cache entry is ignored


def test_every_cut_before_the_end_of_archive_blocks_is_reported_and_none_after(tmp_path):
    """Small members (webdataset's writer: a pax header, a header and one data block each): a cut in a header,
    in a member's data or in the padding after it used to pass for a whole shard when under 512 bytes remained."""
    import webdataset as wds

    path = tmp_path / "small.tar"
    with wds.TarWriter(str(path)) as sink:
        for number in range(3):
            sink.write({"__key__": f"{number:06d}", "jpg": b"j" * (10 + number), "txt": b"caption"})
    whole = path.read_bytes()
    full = read_index("small.tar", io.BytesIO(whole), len(whole))
    assert full.error is None and full.keys == ["000000", "000001", "000002"]
    end = full.spans[-1][1] + (-full.spans[-1][1]) % 512 + 1024  # past the last member's padding and the 2 zero blocks
    assert len(whole) % 10240 == 0 and whole[end:] == bytes(len(whole) - end)  # then tarfile's record padding
    for cut in range(len(whole) + 1):
        index = read_index("small.tar", io.BytesIO(whole[:cut]), cut)
        assert index.keys == full.keys[: len(index.keys)]
        assert all(offset + size <= cut for fields in index.members for offset, size in fields.values())
        if cut < end:
            assert index.error is not None, f"a cut at byte {cut} of {len(whole)} passed unseen"
        else:  # only record padding lost: every member and the end marker are there
            assert index.error is None and index.members == full.members, cut
    lone = whole[:end - 1024] + bytes(512) + b"x" * 512
    assert "lone zero block" in read_index("lone.tar", io.BytesIO(lone), len(lone)).error


def test_a_shard_cut_in_a_header_is_a_corrupt_shard_in_fit_eval_and_retrieval(tmp_path):
    from clipmodule.data.datamodule import EpochLoader, ShardTrainDataset, TokenizingCollate, sum_counters
    from clipmodule.data.synthetic import CLASSNAMES, write_synthetic_shards
    from clipmodule.eval.readers import open_classification, open_retrieval
    from clipmodule.transforms import image_transform

    paths = write_synthetic_shards(tmp_path, 2, 4, image_size=32)
    whole = paths[0].read_bytes()
    paths[0].write_bytes(whole[: whole.rindex(b"00000003.txt") + 100])  # inside the last caption's header
    dataset = ShardTrainDataset([str(p) for p in paths], image_transform(32, train=True), batch_size=7,
                                batches_per_rank=1, shuffle_buffer=8)
    iterator = iter(EpochLoader(dataset, batch_size=7, num_workers=0, collate_fn=TokenizingCollate()))
    assert len(next(iterator)["key"]) == 7
    assert sum_counters(iterator.state_dict()) == {"corrupt_samples": 1, "corrupt_shards": 1}
    spec = str(tmp_path / "{00000..00001}.tar")
    retrieval = open_retrieval(spec, image_transform(32, train=False))
    assert len(list(retrieval)) == 7 and retrieval.damage() == {"corrupt_shards": 1, "skipped_samples": 1}
    classification = open_classification(spec, image_transform(32, train=False), list(CLASSNAMES))
    assert len(list(classification)) == 8 and classification.damage() == {"corrupt_shards": 1, "skipped_samples": 0}
