"""`clipmodule serve` answers clip-retrieval's own `ClipClient` (the installed peer) by text, image and embedding
with the hits of `clipmodule search`; `/indices-list`, `/metadata`, neighbours, the browse API and the cards."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import requests
import torch
from PIL import Image

import clipmodule
from clipmodule.cli import main


def clip_client_module():
    """clip-retrieval's `clip_client.py`, loaded from its file: the package's `__init__` needs its whole back-end
    stack (flask, ...), the client only `requests`."""
    spec = importlib.util.find_spec("clip_retrieval")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("clip-retrieval is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / "clip_client.py"
    loaded = importlib.util.spec_from_file_location("clip_retrieval_client", path)
    module = importlib.util.module_from_spec(loaded)
    loaded.loader.exec_module(module)
    return module


def cli_hits(argv: list[str], index: Path, out: Path, k: int) -> list[dict]:
    assert main(["search", *argv, "--index", str(index), "-k", str(k), "--out", str(out)]) == 0
    return json.loads(out.with_suffix(".json").read_text())["hits"]


def test_clip_client_gets_the_hits_of_clipmodule_search(served, indexed, tmp_path, one_thread):
    root, model_path = indexed
    client_module = clip_client_module()
    client = client_module.ClipClient(url=served.url + "knn-service", indice_name="tiny", num_images=7)
    image_file = tmp_path / "query.png"
    Image.new("RGB", (32, 32), (220, 30, 30)).save(image_file)
    model, _ = clipmodule.load(model_path)
    with torch.no_grad():
        embedding = model.encode_text(clipmodule.tokenize(["a red circle"]), normalize=True)[0].tolist()
    text_hits = cli_hits(["a red circle"], root / "index", tmp_path / "t.png", 7)
    image_hits = cli_hits(["--image", str(image_file)], root / "index", tmp_path / "i.png", 7)
    for answer, expected in ((client.query(text="a red circle"), text_hits),
                             (client.query(image=str(image_file)), image_hits),
                             (client.query(embedding_input=embedding), text_hits)):
        assert [(r["shard"], r["key"]) for r in answer] == [(h["shard"], h["key"]) for h in expected]
        assert [r["similarity"] for r in answer] == pytest.approx([h["score"] for h in expected], abs=1e-5)
        assert [r["caption"] for r in answer] == [h["caption"] for h in expected]
        first = requests.get(answer[0]["url"], timeout=10)
        assert first.status_code == 200 and first.headers["content-type"] == "image/jpeg"
    ids = [r["id"] for r in client.query(text="a red circle")]
    meta = requests.post(served.url + "metadata", data=json.dumps({"ids": ids, "indice_name": "tiny"}), timeout=10)
    assert [m["metadata"]["key"] for m in meta.json()] == [h["key"] for h in text_hits]
    assert requests.get(served.url + "indices-list", timeout=10).json() == ["tiny"]


def test_neighbours_of_a_sample_start_with_itself(served):
    hits = requests.get(served.url + "api/neighbours/tiny/5?k=4", timeout=10).json()
    assert hits[0]["id"] == 5 and hits[0]["similarity"] == pytest.approx(1.0, abs=1e-4)
    assert len(hits) == 4 and all(a["similarity"] >= b["similarity"] for a, b in zip(hits, hits[1:]))


def test_neighbours_from_the_image_where_the_index_keeps_no_vectors(served, monkeypatch, one_thread):
    """An index that cannot give back its vectors (IVF without a direct map): the sample's image is embedded."""
    served_index = served.service.indexes["tiny"]
    faiss_index = served_index.engine.index.index

    class NoReconstruct:
        d, ntotal = faiss_index.d, faiss_index.ntotal

        def search(self, *args):
            return faiss_index.search(*args)

        def reconstruct(self, row_id):
            raise RuntimeError("direct map not initialized")

    monkeypatch.setattr(served_index.engine.index, "index", NoReconstruct())
    hits = served_index.neighbours(7, 3)
    assert served_index.row_ids[hits[0]["shard"], hits[0]["key"]] == 7
    assert hits[0]["score"] == pytest.approx(1.0, abs=1e-3)


def test_browse_lists_every_decision_and_filters_by_one(served):
    page = requests.get(served.url + "api/browse/tiny-work", timeout=10).json()
    assert page["decisions"] == {"kept": 7, "cap": 4, "decontaminate": 1, "dedup": 1,
                                 "download: failed_to_download": 1, "filter: caption_words": 1,
                                 "filter: clip_score": 2}
    assert page["stages"] == ["match", "balance", "download", "filter", "dedup", "decontamination"]
    dropped = requests.get(served.url + "api/browse/tiny-work", params={"decision": "filter: clip_score"},
                           timeout=10).json()
    assert [row["key"] for row in dropped["rows"]] == ["000000001", "000000002"]
    assert all(row["filter"]["reason"] == "clip_score" and row["queries"][0]["term"] == "red"
               for row in dropped["rows"])
    assert dropped["rows"][0]["width"] == 32 and dropped["rows"][0]["url"].endswith("/img/1.jpg")
    twin = requests.get(served.url + "api/browse/tiny-work", params={"decision": "dedup"}, timeout=10).json()
    assert twin["rows"][0]["dedup"]["duplicate_of_key"] == "000000000"
    capped = requests.get(served.url + "api/browse/tiny-work", params={"decision": "cap"}, timeout=10).json()
    assert capped["total"] == 4 and capped["rows"][0]["queries"] == [
        {"term": "square", "keep_chance": 0.05, "coin": pytest.approx(0.2005, abs=1e-4)}]
    assert requests.get(served.url + "api/browse/tiny-work", params={"decision": "filter"}, timeout=10).json()[
        "total"] == 3
    assert requests.get(served.url + "api/browse/tiny-work", params={"limit": 5, "offset": 16},
                        timeout=10).json()["rows"][0]["decision"] == "download: failed_to_download"
    image = requests.get(served.url + "browse-image/tiny-work/00000.tar/000000001", timeout=10)
    assert image.status_code == 200 and image.content[:2] == b"\xff\xd8"


def test_browse_recomputes_the_coins_curation_balance_tossed(served, work):
    """The cap's decision shown for each row is the one curation's own balance_mask takes on the same rows."""
    from curation.stages.balance.balancing import balance_mask, keep_probabilities, key_hashes

    rows = requests.get(served.url + "api/browse/tiny-work", params={"limit": 50}, timeout=10).json()["rows"]
    matched = pq.read_table(work / "matched")
    probabilities = keep_probabilities(np.array([13, 12, 400]), 20)
    mask = balance_mask(key_hashes(matched["url"].to_pylist()), matched["query_ids"].combine_chunks(),
                        probabilities, seed=0)
    assert [row["url"] for row in rows] == matched["url"].to_pylist()
    assert [row["cap"] == "kept" for row in rows] == mask.tolist()
    assert [any(q["coin"] < q["keep_chance"] for q in row["queries"]) for row in rows] == mask.tolist()


def test_cards_render_with_their_plots_and_no_raw_html(served):
    page = requests.get(served.url + "cards/tiny", timeout=10)
    assert page.status_code == 200 and "<table>" in page.text and '<img src="tiny.filter.png"' in page.text
    assert "<script>alert" not in page.text and "MLflow runs" in page.text
    assert page.headers["content-security-policy"].startswith("default-src 'self'")
    plot = requests.get(served.url + "cards/tiny.filter.png", timeout=10)
    assert plot.status_code == 200 and plot.headers["content-type"] == "image/png"
    assert requests.get(served.url + "api/config", timeout=10).json()["cards"] == ["tiny"]
