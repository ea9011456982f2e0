"""Evaluation datasets: folder, CSV, webdataset shards, builtin sets, and one-line errors on bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from clipmodule.errors import ClipModuleError
from clipmodule.eval.prompts import read_classnames, read_templates
from clipmodule.eval.readers import open_classification, open_retrieval
from clipmodule.eval.readers.builtin import builtin_classification, builtin_retrieval, render_shapes
from clipmodule.eval.tasks import LoaderOptions, extract_features
from clipmodule.transforms import image_transform

TRANSFORM = image_transform(32)


def _png(path: Path, colour: tuple[int, int, int]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (40, 30), colour).save(path)
    return path


def test_shipped_imagenet_names_and_templates_with_licence():
    names, templates = read_classnames("imagenet"), read_templates("imagenet")
    assert len(names) == 1000 and names[0] == "tench" and names[-1] == "toilet paper"
    assert len(templates) == 80 and all("{}" in template for template in templates)
    assert templates[0] == "a bad photo of a {}."
    assets = Path(__file__).resolve().parents[3] / "clipmodule/assets"
    notice = (assets / "LICENSE-openai-clip-imagenet-prompts.txt").read_text()
    assert "MIT License" in notice and "imagenet_classnames.txt" in notice and "imagenet_templates.txt" in notice


def test_unknown_class_name_file_and_bad_templates(tmp_path):
    with pytest.raises(ClipModuleError, match=r"no-such-names.txt: no such class-name file"):
        read_classnames("no-such-names.txt")
    bad = tmp_path / "templates.txt"
    bad.write_text("a photo of a {}.\na photo without a slot\n")
    with pytest.raises(ClipModuleError, match=r"templates.txt: template 'a photo without a slot' has no slot for the"):
        read_templates(str(bad))


def test_image_folder_labels_follow_sorted_folders(tmp_path):
    _png(tmp_path / "b_dog" / "1.png", (0, 0, 255))
    _png(tmp_path / "a_cat" / "1.png", (255, 0, 0))
    _png(tmp_path / "a_cat" / "2.jpg", (255, 0, 0))
    dataset = open_classification(str(tmp_path), TRANSFORM)
    assert dataset.classnames == ["a cat", "b dog"]
    assert [dataset[i][1] for i in range(len(dataset))] == [0, 0, 1]
    assert dataset[0][0].shape == (3, 32, 32)
    with pytest.raises(ClipModuleError, match="2 class folders but 3 class names"):
        open_classification(str(tmp_path), TRANSFORM, ["x", "y", "z"])


def test_class_name_file_in_another_order_labels_folders_by_name(tmp_path):
    _png(tmp_path / "zebra" / "1.png", (0, 0, 255))
    _png(tmp_path / "apple" / "1.png", (255, 0, 0))
    dataset = open_classification(str(tmp_path), TRANSFORM, ["zebra", "apple"])
    labels = {Path(path).parent.name: label for path, label in dataset.items}
    assert labels == {"zebra": 0, "apple": 1}  # not the sorted-folder indices, which would swap them
    renamed = open_classification(str(tmp_path), TRANSFORM, ["first", "second"])  # other names: by position
    assert {Path(path).parent.name: label for path, label in renamed.items} == {"apple": 0, "zebra": 1}


def test_empty_dataset_folder(tmp_path):
    with pytest.raises(ClipModuleError, match=f"{tmp_path}: empty dataset folder"):
        open_classification(str(tmp_path), TRANSFORM)
    (tmp_path / "cat").mkdir()
    with pytest.raises(ClipModuleError, match="empty dataset folder"):
        open_classification(str(tmp_path), TRANSFORM)


@pytest.mark.parametrize("workers", [0, 1])
def test_unreadable_image_is_named_in_one_line(tmp_path, workers):
    _png(tmp_path / "cat" / "good.png", (1, 2, 3))
    (tmp_path / "cat" / "broken.png").write_bytes(b"\x89PNG not really")
    dataset = open_classification(str(tmp_path), TRANSFORM)
    with pytest.raises(ClipModuleError) as caught:
        extract_features(lambda images: images.flatten(1), dataset, LoaderOptions(batch_size=2, num_workers=workers))
    message = str(caught.value)
    assert "broken.png: unreadable image" in message and "\n" not in message


def test_csv_labels_and_captions(tmp_path):
    _png(tmp_path / "img" / "a.png", (255, 0, 0))
    _png(tmp_path / "img" / "b.png", (0, 255, 0))
    (tmp_path / "labels.csv").write_text("filepath,label\nimg/a.png,red\nimg/b.png,green\nimg/b.png,1\n")
    dataset = open_classification(str(tmp_path / "labels.csv"), TRANSFORM, ["red", "green"])
    assert [label for _, label in dataset.items] == [0, 1, 1]
    (tmp_path / "bad_label.csv").write_text("path,label\nimg/a.png,blue\n")
    with pytest.raises(ClipModuleError, match=r"bad_label.csv:2: label 'blue' is neither a class name nor an index"):
        open_classification(str(tmp_path / "bad_label.csv"), TRANSFORM, ["red", "green"])
    (tmp_path / "no_header.csv").write_text("img/a.png,red\n")
    with pytest.raises(ClipModuleError, match="needs a path column"):
        open_classification(str(tmp_path / "no_header.csv"), TRANSFORM)
    (tmp_path / "captions.csv").write_text("image,caption\nimg/a.png,a red square\nimg/b.png,green\nimg/a.png,red\n")
    captioned = open_retrieval(str(tmp_path / "captions.csv"), TRANSFORM)
    assert [captions for _, captions in captioned.items] == [["a red square", "red"], ["green"]]


def test_csv_without_class_names_sorts_its_labels(tmp_path):
    _png(tmp_path / "a.png", (255, 0, 0))
    (tmp_path / "labels.csv").write_text("path,class\na.png,zebra\na.png,ant\n")
    dataset = open_classification(str(tmp_path / "labels.csv"), TRANSFORM)
    assert dataset.classnames == ["ant", "zebra"] and [label for _, label in dataset.items] == [1, 0]


def test_webdataset_shards_with_class_and_captions(tmp_path):
    import io

    import webdataset as wds

    def encoded(colour):
        buffer = io.BytesIO()
        Image.new("RGB", (20, 20), colour).save(buffer, format="PNG")
        return buffer.getvalue()

    for shard in range(2):
        with wds.TarWriter(str(tmp_path / f"eval-{shard}.tar")) as sink:
            for index in range(3):
                label = (shard + index) % 2
                sink.write({"__key__": f"{shard}_{index}", "png": encoded((255 * label, 0, 0)),
                            "cls": str(label).encode(), "txt": f"caption {index}\nsecond {index}".encode()})
    spec = str(tmp_path / "eval-{0..1}.tar")
    dataset = open_classification(spec, TRANSFORM, ["black", "red"])
    features, labels = extract_features(lambda images: images.mean(dim=(2, 3)), dataset, LoaderOptions(batch_size=4))
    assert labels == [0, 1, 0, 1, 0, 1] and features.shape == (6, 3)
    assert torch.all((features[:, 0] > 0) == torch.tensor(labels, dtype=torch.bool))  # red channel ⇔ label 1
    _, parallel = extract_features(lambda images: images.mean(dim=(2, 3)), dataset, LoaderOptions(2, num_workers=2))
    assert sorted(parallel) == sorted(labels)  # each worker reads its own shard: nothing lost or doubled
    captions = [item[1] for item in open_retrieval(spec, TRANSFORM)]
    assert captions[0] == ["caption 0", "second 0"] and len(captions) == 6
    with pytest.raises(ClipModuleError, match="shards carry class indices"):
        open_classification(spec, TRANSFORM)
    with pytest.raises(ClipModuleError, match=r"1 of 3 shards are missing, the first: .*eval-2.tar"):
        open_classification(str(tmp_path / "eval-{0..2}.tar"), TRANSFORM, ["black", "red"])
    with pytest.raises(ClipModuleError, match=r"class '1' is not an index into the 1 class names"):
        extract_features(lambda images: images, open_classification(spec, TRANSFORM, ["black"]), LoaderOptions())


def test_shards_labelled_in_json_as_fit_reads_them(tmp_path):
    import io
    import json

    import webdataset as wds

    def encoded(colour):
        buffer = io.BytesIO()
        Image.new("RGB", (20, 20), colour).save(buffer, format="JPEG")
        return buffer.getvalue()

    with wds.TarWriter(str(tmp_path / "00000.tar")) as sink:  # no `cls`: the label is in the json, as `fit` takes it
        for index in range(4):
            sink.write({"__key__": f"{index:05d}", "jpg": encoded((255 * (index % 2), 0, 0)),
                        "json": json.dumps({"label": index % 2, "caption": "x"}).encode()})
        sink.write({"__key__": "00004", "jpg": encoded((0, 0, 0)), "json": json.dumps({"label": "red"}).encode()})
    dataset = open_classification(str(tmp_path), TRANSFORM, ["black", "red"])  # a folder of shards
    items = iter(dataset)
    assert [next(items)[1] for _ in range(4)] == [0, 1, 0, 1]
    with pytest.raises(ClipModuleError, match=r"00000.tar:00004: json label 'red' is not an integer"):
        next(items)


def test_builtin_sets():
    train = builtin_classification("builtin:digits:train", TRANSFORM)
    test = builtin_classification("builtin:digits:test", TRANSFORM)
    assert len(train) + len(test) == 1797 and train.classnames == [str(d) for d in range(10)]
    assert np.bincount([label for _, label in test.items]).min() >= 85  # stratified halves
    images, labels, captions = render_shapes()
    again = render_shapes()
    assert np.array_equal(np.asarray(images[7]), np.asarray(again[0][7])) and captions == again[2]  # seeded
    assert captions[0][0].endswith("circle") and len(images) == 200 and labels.count(3) == 50
    skimage = builtin_retrieval("builtin:skimage", TRANSFORM)
    assert len(skimage) == 17 and all(len(captions) == 2 for _, captions in skimage.items)
    with pytest.raises(ClipModuleError, match="builtin:mnist: unknown built-in dataset"):
        builtin_classification("builtin:mnist", TRANSFORM)
    with pytest.raises(ClipModuleError, match="not an image folder"):
        open_classification("no/such/place", TRANSFORM)


def _write_shards(root: Path, count: int = 2, per_shard: int = 3) -> str:
    import io

    import webdataset as wds

    for shard in range(count):
        with wds.TarWriter(str(root / f"part-{shard}.tar")) as sink:
            for index in range(per_shard):
                buffer = io.BytesIO()
                Image.new("RGB", (20, 20), (255 * (index % 2), 0, 0)).save(buffer, format="PNG")
                sink.write({"__key__": f"{shard}_{index}", "png": buffer.getvalue(), "cls": str(index % 2).encode(),
                            "txt": f"caption {shard} {index}".encode()})
    return str(root / f"part-{{0..{count - 1}}}.tar")


@pytest.mark.parametrize("workers", [0, 2])
def test_a_truncated_shard_gives_its_samples_before_the_damage_and_is_counted(tmp_path, workers):
    spec = _write_shards(tmp_path)
    whole = (tmp_path / "part-0.tar").read_bytes()
    # Cut inside the third sample's image (fields are written cls, png, txt): its label is there, its image is not.
    cut = whole.index(b"0_2.png") + 512 + 10
    (tmp_path / "part-0.tar").write_bytes(whole[:cut])
    dataset = open_classification(spec, TRANSFORM, ["black", "red"])
    _, labels = extract_features(lambda images: images.mean(dim=(2, 3)), dataset, LoaderOptions(2, workers))
    assert labels == [0, 1, 0, 1, 0] if workers == 0 else sorted(labels) == [0, 0, 0, 1, 1]  # 2 before the damage + 3
    assert dataset.damage() == {"corrupt_shards": 1, "skipped_samples": 1}
    captions = [captions for _, captions in open_retrieval(spec, TRANSFORM)]
    assert captions == [["caption 0 0"], ["caption 0 1"], ["caption 1 0"], ["caption 1 1"], ["caption 1 2"]]
    (tmp_path / "part-0.tar").write_bytes(b"not a tar at all" * 100)
    unreadable = open_classification(spec, TRANSFORM, ["black", "red"])
    assert len(extract_features(lambda images: images, unreadable, LoaderOptions(4))[1]) == 3
    assert unreadable.damage() == {"corrupt_shards": 1, "skipped_samples": 0}
    (tmp_path / "intact").mkdir()
    intact = open_classification(_write_shards(tmp_path / "intact"), TRANSFORM, ["black", "red"])
    assert intact.damage() == {"corrupt_shards": 0, "skipped_samples": 0}
