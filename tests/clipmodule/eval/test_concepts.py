"""`eval concepts`: a zero-shot record's per-class recall beside the training captions naming each class, found
through the run's data_card_hash (MLflow tag) and its card; the log-linear fit; bad input is one line."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from clipmodule.cli import main as clipmodule
from clipmodule.errors import ClipModuleError
from clipmodule.eval.concepts import concept_report, log_linear_fit, zeroshot_result
from clipmodule.tracking.mlflow import TrackingOptions, log_to_mlflow

CLASSES = ["circle", "square", "triangle", "cross"]


def _captions(folder, texts):
    folder.mkdir(parents=True)
    pq.write_table(pa.table({"url": [f"http://x/{i}" for i in range(len(texts))], "caption": texts}),
                   folder / "00000.parquet")


@pytest.fixture
def lab(tmp_path):
    """A curation work folder (matched, balanced), its card, a fit run folder with a checkpoint and a record."""
    matched = ["a red circle"] * 40 + ["a big square"] * 8 + ["Triangles"] * 5 + ["a triangle"] * 2
    _captions(tmp_path / "work" / "matched", matched)
    _captions(tmp_path / "work" / "balanced", ["a red circle"] * 10 + ["a big square"] * 8 + ["a triangle"] * 2)
    (tmp_path / "cards").mkdir()
    card = {"name": "shapes", "content_hash": "abc123", "lineage": {"work_dir": str(tmp_path / "work")}}
    (tmp_path / "cards" / "shapes.json").write_text(json.dumps(card))
    (tmp_path / "cards" / "other.json").write_text(json.dumps({"content_hash": "zzz"}))
    checkpoint = tmp_path / "runs" / "fit" / "version_0" / "checkpoints" / "last.ckpt"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.touch()
    record = {"task": "zeroshot", "model": str(checkpoint), "dataset": "shapes-test", "classnames": CLASSES,
              "templates": ["a {}"], "metrics": {"top1": 0.5},
              "detail": {"per_class_recall": [0.9, 0.6, 0.3, 0.1], "per_class_count": [5, 5, 5, 5]}}
    (tmp_path / "zs.json").write_text(json.dumps(record))
    return tmp_path


def test_concepts_count_class_names_in_the_cards_data_and_fit_recall_to_log_count(lab, capsys):
    out = lab / "out" / "concepts"
    argv = ["eval", "concepts", "--result", str(lab / "zs.json"), "--cards", str(lab / "cards"), "--data_card_hash",
            "abc123", "--output", str(out), "--rare", "5"]
    assert clipmodule(argv) == 0, capsys.readouterr().err
    report = json.loads(out.with_suffix(".json").read_text())
    counts = {entry["class"]: (entry["matched"], entry["kept"]) for entry in report["classes"]}
    assert counts == {"circle": (40, 10), "square": (8, 8), "triangle": (2, 2), "cross": (0, 0)}  # not "Triangles"
    assert report["never"] == ["cross"] and report["rare"] == ["triangle"] and report["card"].endswith("shapes.json")
    assert report["fit_on"] == "kept" and report["fit"]["slope"] > 0 and report["fit"]["classes"] == 3
    assert "| circle | 40 | 10 | 90.0 | 5 |" in out.with_suffix(".md").read_text()
    assert out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"


def test_the_fit_is_least_squares_on_log10_count():
    fit = log_linear_fit([10, 100, 1000, 0], [0.2, 0.4, 0.6, None])
    assert fit["slope"] == pytest.approx(0.2) and fit["intercept"] == pytest.approx(0.0)
    assert fit["pearson_r"] == pytest.approx(1.0) and log_linear_fit([5, 5], [0.1, 0.2]) is None
    report = concept_report({"name": "x", "model": "m", "classnames": ["cat"], "recall": [0.5], "count": None},
                            ["a cat"], None, rare=10)
    assert report["fit_on"] == "matched" and report["rare"] == ["cat"] and report["fit"] is None


def test_bad_input_is_one_line(lab, capsys):
    suite = {"rows": [{"name": "a", "classnames": CLASSES, "detail": {"per_class_recall": [0.1] * 4}},
                      {"name": "b", "classnames": CLASSES, "detail": {"per_class_recall": [0.1] * 4}}]}
    (lab / "suite.json").write_text(json.dumps(suite))
    with pytest.raises(ClipModuleError, match=r"several zero-shot rows with per-class results; pass --row \(rows: a"):
        zeroshot_result(lab / "suite.json")
    assert zeroshot_result(lab / "suite.json", "b")["name"] == "b"
    (lab / "old.json").write_text(json.dumps({"task": "zeroshot", "metrics": {"top1": 0.1}}))
    with pytest.raises(ClipModuleError, match="old.json: no per-class zero-shot results"):
        zeroshot_result(lab / "old.json")
    argv = ["eval", "concepts", "--result", str(lab / "zs.json"), "--cards", str(lab / "cards"),
            "--data_card_hash", "nope", "--output", str(lab / "o")]
    assert clipmodule(argv) == 2
    assert capsys.readouterr().err.strip().endswith("no data card with content_hash nope (the run's data_card_hash)")
    argv[-4:-2] = ["--tracking.uri", "none"]
    assert clipmodule(argv) == 2
    assert "pass --card or --data_card_hash" in capsys.readouterr().err


@pytest.mark.slow  # an MLflow sqlite store is created (~10 s)
def test_the_card_is_found_through_the_fit_runs_data_card_hash(lab, capsys):
    uri = f"sqlite:///{lab / 'mlruns.db'}"
    log_to_mlflow(TrackingOptions(uri=uri, experiment="fit"), "fit", {}, {},
                  {"run_folder": str(lab / "runs" / "fit" / "version_0"), "data_card_hash": "abc123"})
    argv = ["eval", "concepts", "--result", str(lab / "zs.json"), "--cards", str(lab / "cards"), "--tracking.uri",
            uri, "--output", str(lab / "found")]
    assert clipmodule(argv) == 0, capsys.readouterr().err
    assert json.loads((lab / "found.json").read_text())["card"].endswith("shapes.json")


def test_without_the_captions_the_balance_stages_counts_per_query_serve_else_one_line(lab, capsys):
    import shutil

    for folder in ("matched", "balanced"):  # the curation folder was cleaned up after the card was written
        shutil.rmtree(lab / "work" / folder)
    pq.write_table(pa.table({"id": [0, 1, 2, 3], "term": ["Circle", "square", "triangle", "photo"],
                             "matched": [40, 8, 2, 50], "kept": [10, 8, 2, 10]}),
                   lab / "work" / "balanced.counts.parquet")
    out = lab / "out" / "counts"
    argv = ["eval", "concepts", "--result", str(lab / "zs.json"), "--cards", str(lab / "cards"), "--data_card_hash",
            "abc123", "--output", str(out), "--rare", "5"]
    assert clipmodule(argv) == 0, capsys.readouterr().err
    report = json.loads(out.with_suffix(".json").read_text())
    counts = {entry["class"]: (entry["matched"], entry["kept"]) for entry in report["classes"]}
    assert counts == {"circle": (40, 10), "square": (8, 8), "triangle": (2, 2), "cross": (None, None)}
    assert report["counted_in"] == "query counts" and report["unknown"] == ["cross"] and report["never"] == []
    assert report["rare"] == ["triangle"] and report["fit"]["classes"] == 3
    assert "No count (not a query): cross." in out.with_suffix(".md").read_text()
    (lab / "work" / "balanced.counts.parquet").unlink()  # the work folder is gone too: the card's head is left
    card = json.loads((lab / "cards" / "shapes.json").read_text())
    card["balance"] = {"head": [{"term": "a", "matched": 55, "kept": 20}, {"term": "circle", "matched": 40,
                                                                          "kept": 10}]}
    (lab / "cards" / "shapes.json").write_text(json.dumps(card))
    assert clipmodule(argv) == 0, capsys.readouterr().err
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["counted_in"] == "card head" and report["unknown"] == ["square", "triangle", "cross"]
    assert report["classes"][0]["kept"] == 10 and report["fit"] is None
    card["balance"]["head"] = card["balance"]["head"][:1]  # no class among the head: nothing to count
    (lab / "cards" / "shapes.json").write_text(json.dumps(card))
    assert clipmodule(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("the card's curation folder holds neither its matched/ captions nor its balanced.counts"
                        ".parquet, and no class name is among the card's 1 most matched queries; pass --work_dir")
    assert len(err.splitlines()) == 1 and str(lab / "work") in err


def _counts_without_captions(lab, table):
    import shutil

    for folder in ("matched", "balanced"):
        shutil.rmtree(lab / "work" / folder)
    pq.write_table(pa.table(table), lab / "work" / "balanced.counts.parquet")


def test_a_query_listed_in_several_languages_sums_its_languages_counts(lab):
    from clipmodule.eval.concepts import class_counts

    _counts_without_captions(lab, {"term": ["circle", "Circle", "square"], "lang": ["en", "fr", "en"],
                                   "matched": [40, 6, 8], "kept": [10, 3, 8]})
    counts = class_counts(lab / "cards" / "shapes.json", None, ["circle", "square"])
    assert counts["matched"] == [46, 8] and counts["kept"] == [13, 8]


def test_a_repeated_query_without_languages_or_a_null_count_is_one_line(lab):
    from clipmodule.eval.concepts import class_counts

    _counts_without_captions(lab, {"term": ["circle", "Circle"], "matched": [40, 6], "kept": [10, 3]})
    with pytest.raises(ClipModuleError, match=r"balanced.counts.parquet: query 'Circle' is listed twice .*no lang"):
        class_counts(lab / "cards" / "shapes.json", None, ["circle"])
    pq.write_table(pa.table({"term": ["circle", "square"], "matched": [40, None], "kept": [10, 8]}),
                   lab / "work" / "balanced.counts.parquet")
    with pytest.raises(ClipModuleError, match=r"balanced.counts.parquet: query 'square' has no whole counts"):
        class_counts(lab / "cards" / "shapes.json", None, ["circle"])


def test_the_card_head_sums_languages_refuses_repeats_and_serves_a_card_without_a_work_dir(lab):
    from clipmodule.eval.concepts import class_counts

    card = {"content_hash": "abc123", "balance": {"head": [
        {"term": "circle", "lang": "en", "matched": 40, "kept": 10},
        {"term": "circle", "lang": "de", "matched": 5, "kept": 5}]}}
    path = lab / "cards" / "shapes.json"
    path.write_text(json.dumps(card))  # no lineage.work_dir: straight to the head
    counts = class_counts(path, None, ["circle", "square"])
    assert counts["source"] == "card head" and counts["matched"] == [45, None] and counts["kept"] == [15, None]
    for entry in card["balance"]["head"]:
        del entry["lang"]
    path.write_text(json.dumps(card))
    with pytest.raises(ClipModuleError, match=r"shapes.json \(balance.head\): query 'circle' is listed twice"):
        class_counts(path, None, ["circle"])
    card["balance"]["head"] = [{"term": "circle", "matched": None, "kept": 3}]
    path.write_text(json.dumps(card))
    with pytest.raises(ClipModuleError, match=r"shapes.json \(balance.head\): query 'circle' has no whole counts"):
        class_counts(path, None, ["circle"])
