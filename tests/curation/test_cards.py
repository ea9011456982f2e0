"""Data cards: the head of the query distribution names each term's language in a worldwide curation."""

import pyarrow as pa
import pyarrow.parquet as pq

from curation.cards import query_distribution


def test_the_head_names_a_terms_language_when_the_counts_have_one(tmp_path):
    counts = {"term": ["de", "de", "la", "cat"], "matched": [50, 40, 30, 5], "kept": [10, 10, 10, 5]}
    pq.write_table(pa.table({**counts, "lang": ["fr", "es", "fr", "en"]}), tmp_path / "world.counts.parquet")
    head = query_distribution(tmp_path / "world.counts.parquet", 10)["head"]
    assert [(entry["term"], entry["lang"]) for entry in head] == [("de", "fr"), ("de", "es"), ("la", "fr"),
                                                                  ("cat", "en")]
    pq.write_table(pa.table(counts), tmp_path / "en.counts.parquet")
    assert all("lang" not in entry for entry in query_distribution(tmp_path / "en.counts.parquet", 10)["head"])
