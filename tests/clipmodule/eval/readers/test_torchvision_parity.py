"""Parity with the peer: torchvision's dataset classes read the same tiny copies to the same images, labels
and class names (CIFAR-100's, Food-101's and SUN397's in CLIP_benchmark's spelling: "_" and "/" as spaces).
torchvision's md5 checks of the real archives are off for these copies (test data, not the files it knows)."""

from __future__ import annotations

import numpy as np
import pytest

from clipmodule.eval.readers import open_dataset
from tests.clipmodule.eval.readers import copies
from tests.clipmodule.eval.readers import test_folders as folders


def _peer(name: str, root, split: str):
    from torchvision import datasets

    factories = {
        "cifar10": lambda: datasets.CIFAR10(root, train=split == "train"),
        "cifar100": lambda: datasets.CIFAR100(root, train=split == "train"),
        "mnist": lambda: datasets.MNIST(root, train=split == "train"),
        "stl10": lambda: datasets.STL10(root, split=split),
        "svhn": lambda: datasets.SVHN(root, split=split),
        "pcam": lambda: datasets.PCAM(root, split=split),
        "eurosat": lambda: datasets.EuroSAT(root),
        "country211": lambda: datasets.Country211(root, split=split),
        "renderedsst2": lambda: datasets.RenderedSST2(root, split=split),
        "gtsrb": lambda: datasets.GTSRB(root, split=split),
        "sun397": lambda: datasets.SUN397(root),
        "food101": lambda: datasets.Food101(root, split=split),
        "flowers": lambda: datasets.Flowers102(root, split=split),
        "dtd": lambda: datasets.DTD(root, split=split),
        "pets": lambda: datasets.OxfordIIITPet(root, split=split),
        "fgvc_aircraft": lambda: datasets.FGVCAircraft(root, split=split),
        "cars": lambda: datasets.StanfordCars(root, split=split),
    }
    return factories[name]()


WRITERS = {"cifar10": copies.write_cifar10, "cifar100": copies.write_cifar100,
           "mnist": lambda root: copies.write_mnist(root, gz=False), "stl10": copies.write_stl10,
           "svhn": copies.write_svhn, "pcam": copies.write_pcam, **folders.WRITERS}
SPLITS = {"eurosat": "all", "sun397": "all", "pets": "trainval"}
NO_COMPARABLE_NAMES = {"mnist", "gtsrb", "flowers", "svhn", "pcam"}  # torchvision names them otherwise or not at all
SPACED = {"cifar100", "food101", "sun397"}  # CLIP_benchmark's spelling of torchvision's names: "_" and "/" as spaces


@pytest.fixture
def no_md5(monkeypatch):
    import torchvision.datasets.cifar
    import torchvision.datasets.flowers102
    import torchvision.datasets.stl10
    import torchvision.datasets.svhn

    for module in (torchvision.datasets.cifar, torchvision.datasets.stl10, torchvision.datasets.svhn,
                   torchvision.datasets.flowers102):
        monkeypatch.setattr(module, "check_integrity", lambda *args, **kwargs: True)


@pytest.mark.parametrize("name", sorted(set(WRITERS) - {"caltech101", "resisc45"}))  # no torchvision twin read alike
def test_same_images_labels_and_names_as_torchvision(tmp_path, name, no_md5):
    WRITERS[name](tmp_path)
    split = SPLITS.get(name, "test")
    ours, peer = open_dataset(name, tmp_path, split), _peer(name, str(tmp_path), split)
    assert len(ours) == len(peer)
    if name == "sun397":  # torchvision lists SUN397 in rglob order (the file system's); compare (image, label) sets
        mine = sorted((np.asarray(ours[i][0]).tobytes(), ours[i][1]) for i in range(len(ours)))
        theirs = sorted((np.asarray(peer[i][0].convert("RGB")).tobytes(), peer[i][1]) for i in range(len(peer)))
        assert mine == theirs
    else:
        for index in range(len(ours)):
            image, label = ours[index]
            peer_image, peer_label = peer[index]
            assert label == int(peer_label), index
            assert np.array_equal(np.asarray(image), np.asarray(peer_image.convert("RGB"))), index
    if name not in NO_COMPARABLE_NAMES:
        spaced = [cls.replace("_", " ").replace("/", " ") for cls in peer.classes]
        assert ours.classnames == (spaced if name in SPACED else peer.classes)
