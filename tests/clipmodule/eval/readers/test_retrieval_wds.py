"""Retrieval sets (Flickr8k/30k, MS-COCO) in CLIP_benchmark's and Karpathy's annotation layouts, and CLIP_benchmark's
webdataset layout written by webdataset's own ShardWriter, as `clip_benchmark_export_wds` writes it."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clipmodule.errors import ClipModuleError
from clipmodule.eval.readers import open_dataset
from tests.clipmodule.eval.readers import copies


@pytest.mark.parametrize("name", ["flickr8k", "flickr30k"])
def test_flickr_caption_file(tmp_path, name):
    pairs = copies.write_flickr_txt(tmp_path, name)
    dataset = open_dataset(name, tmp_path, "test")
    assert dataset.task == "retrieval" and dataset.classnames is None
    assert [(Path(path).name, captions) for path, captions in dataset.items] == pairs  # commas kept in captions
    assert [copies.decode(dataset[i][0])[0] for i in range(2)] == [0, 1]
    assert dataset[0][1] == pairs[0][1]


@pytest.mark.parametrize("name, images_dir", [("flickr30k", "flickr30k-images"), ("flickr8k", "Flicker8k_Dataset"),
                                              ("coco", "val2014")])
def test_karpathy_json(tmp_path, name, images_dir):
    copies.write_karpathy_json(tmp_path, name, images_dir)
    registered = {"coco": "mscoco_captions"}.get(name, name)
    test = open_dataset(registered, tmp_path, "test")
    assert [captions for _, captions in test.items] == [["caption 2 0", "caption 2 1"], ["caption 4 0", "caption 4 1"]]
    assert [copies.decode(test[i][0])[0] for i in range(2)] == [2, 4]
    assert len(open_dataset(registered, tmp_path, "train")) == 2  # train and restval
    assert len(open_dataset(registered, tmp_path, "val")) == 1


def test_coco_caption_format(tmp_path):
    copies.write_coco_captions(tmp_path)
    dataset = open_dataset("mscoco_captions", tmp_path)
    assert [captions for _, captions in dataset.items] == [["A man on a moped."],
                                                           ["A woman cutting a cake.", "A woman with a knife."]]
    assert [copies.decode(dataset[i][0])[0] for i in range(2)] == [0, 1]


def _webp(label: int) -> bytes:
    out = io.BytesIO()
    Image.fromarray(copies.pixels(label, "test")).save(out, format="webp", lossless=True)
    return out.getvalue()


def write_wds(root: Path, kind: str, per_shard: int = 2) -> list:
    """A CLIP_benchmark webdataset copy of 5 samples: classnames, templates, dataset_type, test/{n}.tar."""
    import webdataset

    (root / "test").mkdir(parents=True)
    labels = [2, 0, 1, 1, 0]
    targets = {"classification": labels, "multilabel": [[0, 2], [1], [], [0, 1, 2], [2]],
               "retrieval": [[f"photo {n}", f"picture {n}"] for n in range(5)]}[kind]
    field = {"classification": "cls", "multilabel": "npy", "retrieval": "txt"}[kind]
    with webdataset.ShardWriter(str(root / "test" / "%d.tar"), maxcount=per_shard, verbose=0) as sink:
        for index, target in enumerate(targets):
            value = target
            if kind == "multilabel":
                value = np.zeros(3, np.float32)
                value[target] = 1
            elif kind == "retrieval":
                value = "\n".join(target)
            sink.write({"__key__": f"s{index:07d}", "webp": _webp(labels[index]), field: value})
        shards = sink.shard
    (root / "test" / "nshards.txt").write_text(f"{shards}\n")
    if kind != "retrieval":
        (root / "classnames.txt").write_text("cat\ndog\nbird\n")
        (root / "zeroshot_classification_templates.txt").write_text("a photo of a {c}.\na blurry photo of a {c}.\n")
    if kind != "classification":
        (root / "dataset_type.txt").write_text(f"{kind}\n")
    return targets


@pytest.mark.parametrize("kind", ["classification", "multilabel", "retrieval"])
def test_clip_benchmark_webdataset_layout(tmp_path, kind):
    targets = write_wds(tmp_path, kind)
    dataset = open_dataset("wds/vtab/cifar10", tmp_path, "test")
    assert dataset.name == "wds/vtab/cifar10" and len(dataset) == 5
    assert dataset.labels() == targets
    assert dataset.task == {"classification": "zeroshot_classification"}.get(kind, kind)
    if kind != "retrieval":
        assert dataset.classnames == ["cat", "dog", "bird"]
        assert dataset.templates == ["a photo of a {c}.", "a blurry photo of a {c}."]
    assert [copies.decode(dataset[i][0])[0] for i in range(5)] == [2, 0, 1, 1, 0]  # across 3 shards


def test_webdataset_truncated_shard_and_missing_shard_are_refused(tmp_path):
    write_wds(tmp_path, "classification")
    shard = tmp_path / "test" / "1.tar"
    whole = shard.read_bytes()
    for cut in (700, 1536, 4096):  # inside a member, and on block boundaries, where tar headers alone look fine
        shard.write_bytes(whole[:cut])
        with pytest.raises(ClipModuleError, match=r"1\.tar: truncated or corrupt shard"):
            open_dataset("wds", tmp_path)
    shard.unlink()
    with pytest.raises(ClipModuleError, match=r"nshards.txt says 3 shards but 1.tar is missing"):
        open_dataset("wds", tmp_path)
