"""`clipmodule search`: the hits of a text or image query are brute force's over the embeddings; a PNG sheet."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import clipmodule
from clipformats.embeddings import read_embeddings
from clipmodule.cli import main
from clipmodule.data.synthetic import write_synthetic_shards
from curation.config import EmbedConfig, IndexConfig
from curation.stages.embed.embedding import run_embed
from curation.stages.index.knn_index import run_index


@pytest.fixture(scope="module")
def indexed(tmp_path_factory):
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("search")
    model = root / "tiny.safetensors"
    clipmodule.save_checkpoint(clipmodule.create_model("tiny-vit"), model)
    write_synthetic_shards(root / "shards", 3, 12, image_size=32)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_embed(EmbedConfig(model=str(model)), [str(root / "shards")], root / "emb")
    finally:
        torch.set_num_threads(before)
    run_index(IndexConfig(recall_queries=20), root / "emb", root / "index")
    return root, model


def brute_force(root, query: np.ndarray, k: int) -> list[tuple[str, str]]:
    metadata, vectors = read_embeddings(root / "emb", "image")
    order = np.argsort(-(vectors @ query), kind="stable")[:k]
    return [(metadata["shard"][int(i)].as_py(), metadata["key"][int(i)].as_py()) for i in order]


def test_text_and_image_hits_equal_brute_force(indexed, tmp_path, one_thread):
    root, model_path = indexed
    model, preprocess = clipmodule.load(model_path)
    image_file = tmp_path / "query.png"
    Image.new("RGB", (32, 32), (220, 30, 30)).save(image_file)
    with torch.no_grad():
        text = model.encode_text(clipmodule.tokenize(["a red circle"]), normalize=True)[0].numpy()
        image = model.encode_image(preprocess(Image.open(image_file).convert("RGB"))[None], normalize=True)[0].numpy()
    for argv, query in ((["a red circle"], text), (["--image", str(image_file)], image)):
        out = tmp_path / "sheet.png"
        assert main(["search", *argv, "--index", str(root / "index"), "-k", "7", "--out", str(out)]) == 0
        hits = json.loads(out.with_suffix(".json").read_text())["hits"]
        assert [(h["shard"], h["key"]) for h in hits] == brute_force(root, query, 7)
        assert [h["rank"] for h in hits] == list(range(1, 8))
        assert all(a["score"] >= b["score"] for a, b in zip(hits, hits[1:]))
        with Image.open(out) as sheet:
            assert sheet.format == "PNG" and sheet.width > 600


def test_bad_queries_are_one_line(indexed, tmp_path, capsys):
    root, _ = indexed
    for argv, expected in ((["a cat", "--index", str(tmp_path / "none")], "index folder not found"),
                           (["--index", str(root / "index")], "give a text query or --image"),
                           (["--image", str(tmp_path / "none.png"), "--index", str(root / "index")], "cannot read")):
        assert main(["search", *argv, "--out", str(tmp_path / "s.png")]) == 2
        error = capsys.readouterr().err.strip()
        assert expected in error and len(error.splitlines()) == 1, error


def test_the_engine_loads_the_model_once_and_answers_text_image_and_embedding_queries(indexed, monkeypatch,
                                                                                     one_thread):
    from clipmodule.embedding import ShardEmbedder
    from clipmodule.errors import ClipModuleError
    from clipmodule.search.engine import SearchEngine

    root, model_path = indexed
    setups = []
    original = ShardEmbedder.setup
    monkeypatch.setattr(ShardEmbedder, "setup", lambda self, *a, **k: setups.append(a) or original(self, *a, **k))
    engine = SearchEngine(root / "index")
    model, _ = clipmodule.load(model_path)
    for caption in ("a red circle", "a blue square", "a green triangle"):
        with torch.no_grad():
            query = model.encode_text(clipmodule.tokenize([caption]), normalize=True)[0].numpy()
        hits = engine.by_text(caption, 5)
        assert [(h["shard"], h["key"]) for h in hits] == brute_force(root, query, 5)
        assert [(h["shard"], h["key"]) for h in engine.by_embedding(query * 3.0, 5)] == brute_force(root, query, 5)
    assert len(engine.by_image(Image.new("RGB", (32, 32), (40, 60, 220)), 3)) == 3
    assert len(setups) == 1  # one model load for every query of the engine's life
    assert sum(image is not None for image in engine.thumbnails(hits)) == len(hits)
    with pytest.raises(ClipModuleError, match="7-dimensional embeddings, the index holds"):
        engine.by_embedding(np.ones(7), 3)
    with pytest.raises(ClipModuleError, match="zero or not finite"):
        engine.by_embedding(np.zeros(engine.dim), 3)


def test_a_checkpoint_replaced_by_another_of_the_same_width_is_refused(indexed, tmp_path, capsys):
    """The index records its model's weights hash: another tiny-vit under the recorded path (same width, another
    embedding space) is refused in one line, and so is one passed with --model."""
    root, model_path = indexed
    saved = model_path.read_bytes()
    torch.manual_seed(1)
    other = tmp_path / "other.safetensors"
    clipmodule.save_checkpoint(clipmodule.create_model("tiny-vit"), other)
    try:
        model_path.write_bytes(other.read_bytes())
        for extra in ([], ["--model", str(other)]):
            assert main(["search", "a cat", "--index", str(root / "index"), "--out", str(tmp_path / "s.png"),
                         *extra]) == 2
            error = capsys.readouterr().err.strip()
            assert "are not those that embedded" in error and len(error.splitlines()) == 1, error
    finally:
        model_path.write_bytes(saved)
    assert main(["search", "a cat", "--index", str(root / "index"), "--out", str(tmp_path / "s.png")]) == 0
