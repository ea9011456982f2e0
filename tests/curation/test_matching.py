"""Matching semantics (the contract in curation/stages/match/matching.py's docstring) and the `match` stage."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation.config import MatchConfig
from curation.errors import CurationError
from curation.stages.match.matching import Matcher, run_match


def found(terms: list[str], text: str) -> list[str]:
    return [terms[i] for i in Matcher(terms).find(text)]


def test_word_boundaries():
    terms = ["cat", "at", "con"]
    assert found(terms, "a cat sat") == ["cat"]
    assert found(terms, "cats and concat") == []
    assert found(terms, "cat") == ["cat"]  # touches both ends
    assert found(terms, "at cat") == ["cat", "at"]
    assert found(terms, "cat2 2cat x_cat") == ["cat"]  # '_' is not a word character, digits are


def test_punctuation_separates_words_but_belongs_to_terms():
    terms = ["cat", "t-shirt", "c++", "a.m.", "rock 'n' roll", "shirt"]
    assert found(terms, "(cat), cat! 'cat'") == ["cat"]
    assert found(terms, "a red T-Shirt.") == ["t-shirt", "shirt"]
    assert found(terms, "t shirt") == ["shirt"]  # "t-shirt" needs its hyphen
    assert found(terms, "c++ code") == ["c++"]
    assert found(terms, "c++x") == []  # a term ending in punctuation still needs a boundary after it
    assert found(terms, "at 9 a.m. sharp") == ["a.m."]
    assert found(terms, "ROCK ’N’ ROLL") == ["rock 'n' roll"]  # typographic apostrophe equals '


def test_case_whitespace_and_unicode():
    terms = ["école", "naïve", "straße", "москва", "new york", "東京"]
    assert found(terms, "ÉCOLE normale") == ["école"]
    assert found(terms, "nai\u0308ve art") == ["naïve"]  # decomposed ï equals composed ï (NFC)
    assert found(terms, "ecole naive") == []  # accents matter
    assert found(terms, "STRASSE Straße") == ["straße"]
    assert found(terms, "Москва, 1980") == ["москва"]
    assert found(terms, "New\n\t York!") == ["new york"]
    assert found(terms, "東京, 日本") == ["東京"]
    assert found(terms, "東京タワー") == []  # no boundary inside unspaced scripts
    assert found(["café"], "cafe\u0301s") == []  # a combining mark is part of the word


def test_overlapping_and_nested_queries():
    terms = ["new", "york", "new york", "york city", "new york city", "city"]
    assert found(terms, "New York City at night") == terms
    assert found(["a b", "b c"], "a b c") == ["a b", "b c"]
    assert found(["aa"], "aa aa aaa") == ["aa"]  # reported once however often it occurs


def test_duplicates_empty_and_batches():
    matcher = Matcher(["Dog", "dog", "cat"])
    assert matcher.find("a dog") == [0, 1]
    assert matcher.find_many(["cat", "", "dog and cat", "bird"]) == [[2], [], [0, 1, 2], []]
    with pytest.raises(ValueError):
        Matcher(["ok", "   "])


def write_tables(folder, base_rows):
    folder.mkdir()
    table = pa.table(base_rows)
    pq.write_table(table.slice(0, 3), folder / "a.parquet")
    (folder / "b.csv").write_text("link,text,extra\nhttp://x/4,\"A blue, square thing\",7\nhttp://x/5,nothing,8\n")
    (folder / "c.tsv").write_text("http://x/6\ta green triangle \"quoted\"\nhttp://x/8\t\n")
    (folder / "d.jsonl").write_text(json.dumps({"link": "http://x/7", "text": "RED photo"}) + "\n")
    return folder


def test_match_stage_reads_every_format_and_counts(tmp_path, tiny_queries):
    rows = {"link": ["http://x/1", "http://x/2", "http://x/3"], "text": ["a red circle", "zzz", "photo"]}
    folder = write_tables(tmp_path / "captions", rows)
    # csv/jsonl share the header; the tsv is headerless and named by column_names
    config = MatchConfig(url_column="link", caption_column="text", workers=1)
    with pytest.raises(CurationError, match="c.tsv: no column 'link'"):  # its first line is data, not a header
        run_match(config, tiny_queries, [str(folder)], tmp_path / "bad")
    assert not (tmp_path / "bad").exists() and not (tmp_path / "bad.stats.json").exists()
    (folder / "c.tsv").rename(tmp_path / "c.tsv")
    stats = run_match(config, tiny_queries, [str(folder)], tmp_path / "matched")
    headerless = run_match(MatchConfig(url_column="link", caption_column="text", column_names=["link", "text"],
                                       workers=1), tiny_queries, [str(tmp_path / "c.tsv")], tmp_path / "matched_tsv")
    assert stats["rows_in"] == 6 and stats["rows_matched"] == 4 and stats["rows_dropped"] == 2
    assert headerless["rows_in"] == 2 and headerless["rows_matched"] == 1
    terms = pq.read_table(tiny_queries)["term"].to_pylist()
    shards = (tmp_path / "matched").glob("*.parquet")
    out = pa.concat_tables(pq.read_table(p, columns=["url", "query_ids"]) for p in shards)
    got = {row["url"]: sorted(terms[i] for i in row["query_ids"]) for row in out.to_pylist()}
    assert got == {"http://x/1": ["a", "circle", "red"], "http://x/3": ["photo"], "http://x/4": ["a", "blue", "square"],
                   "http://x/7": ["photo", "red"]}
    counts = pq.read_table(tmp_path / "matched.counts.parquet").to_pydict()
    assert counts["matched"][terms.index("red")] == 2 and counts["matched"][terms.index("a")] == 2
    assert sum(counts["matched"]) == sum(len(v) for v in got.values())


def test_match_stage_is_the_same_with_processes_and_resumes(tmp_path, tiny_queries):
    folder = tmp_path / "captions"
    folder.mkdir()
    for i in range(3):
        pq.write_table(pa.table({"url": [f"http://x/{i}/{j}" for j in range(50)],
                                 "caption": [f"a red square {j}" if j % 3 else "nothing" for j in range(50)]}),
                       folder / f"part{i}.parquet")
    one = run_match(MatchConfig(workers=1, batch_rows=7), tiny_queries, [str(folder)], tmp_path / "one")
    two = run_match(MatchConfig(workers=2), tiny_queries, [str(folder)], tmp_path / "two")
    assert one["rows_matched"] == two["rows_matched"] == 3 * 33
    for name in ("00000-part0.parquet", "00002-part2.parquet"):
        assert pq.read_table(tmp_path / "one" / name).equals(pq.read_table(tmp_path / "two" / name))
    # a run that died after one shard: the finished shard is kept, the rest is redone, nothing duplicated
    stats_file = tmp_path / "one.stats.json"
    stats = json.loads(stats_file.read_text())
    stats_file.write_text(json.dumps({**stats, "finished": False}))
    (tmp_path / "one" / "00001-part1.parquet").unlink()
    kept = (tmp_path / "one" / "00000-part0.parquet").stat().st_mtime_ns
    again = run_match(MatchConfig(workers=1), tiny_queries, [str(folder)], tmp_path / "one")
    assert again["rows_matched"] == 99 and again["rows_in"] == 150
    assert (tmp_path / "one" / "00000-part0.parquet").stat().st_mtime_ns == kept


def test_a_str_where_a_list_of_terms_belongs_is_an_error():
    with pytest.raises(TypeError, match="list of str, got a single str 'cat'"):
        Matcher("cat")
    with pytest.raises(TypeError, match="got NoneType at index 1"):
        Matcher(["cat", None])


def test_rows_with_urls_that_may_not_be_fetched_are_dropped_and_counted(tmp_path, tiny_queries):
    urls = ["http://x/1.jpg", "file:///etc/passwd", "http:///a.jpg", "http://[::1", "http://u:p@x/2.jpg",
            "https://x/3.jpg", "file:///data/4.jpg"]
    pq.write_table(pa.table({"url": urls, "caption": ["a red circle"] * len(urls)}), tmp_path / "c.parquet")
    stats = run_match(MatchConfig(workers=1), tiny_queries, [str(tmp_path / "c.parquet")], tmp_path / "m")
    kept = pq.read_table(tmp_path / "m" / "00000-c.parquet")["url"].to_pylist()
    assert kept == ["http://x/1.jpg", "https://x/3.jpg"]
    assert stats["rows_in"] == 7 and stats["rows_matched"] == 2 and stats["rows_refused_url"] == 5
    refused = stats["urls_refused"]
    assert refused["scheme 'file' not allowed (only http, https; see --allow_schemes)"] == 2
    assert refused["no host"] == 1 and refused["credentials (user:password@) in URL"] == 1
    assert refused["malformed URL (bad host or port)"] == 1
    local = run_match(MatchConfig(workers=1, allow_schemes=["file"]), tiny_queries, [str(tmp_path / "c.parquet")],
                      tmp_path / "m2")
    assert local["rows_matched"] == 4 and local["rows_refused_url"] == 3  # file:// only when asked for


def test_empty_or_null_query_terms_are_one_line_and_leave_nothing_that_blocks_the_fixed_run(tmp_path, capsys):
    from curation.cli import main

    captions = tmp_path / "c.parquet"
    pq.write_table(pa.table({"url": ["http://x/1.jpg"], "caption": ["a red circle"]}), captions)
    queries = tmp_path / "q.parquet"
    for terms in (["red", None], ["red", "   "]):
        pq.write_table(pa.table({"id": pa.array([0, 1], pa.int32()), "term": pa.array(terms, pa.string())}), queries)
        code = main(["match", "--captions", str(captions), "--queries", str(queries), "--out", str(tmp_path / "m"),
                     "--workers", "1"])
        err = capsys.readouterr().err.strip()
        assert code == 2 and err.endswith("q.parquet: 1 empty or null terms, first at row 1 (every query needs a "
                                          "non-space character)"), err
        assert len(err.splitlines()) == 1 and not (tmp_path / "m").exists()
    pq.write_table(pa.table({"id": pa.array([0, 1], pa.int32()), "term": ["red", "circle"]}), queries)
    assert main(["match", "--captions", str(captions), "--queries", str(queries), "--out", str(tmp_path / "m"),
                 "--workers", "1"]) == 0


def test_an_output_inside_a_caption_folder_is_refused(tmp_path, tiny_queries):
    folder = tmp_path / "captions"
    folder.mkdir()
    pq.write_table(pa.table({"url": ["http://x/1.jpg"], "caption": ["a red circle"]}), folder / "c.parquet")
    with pytest.raises(CurationError, match="matched: this output lies inside the input .*captions; choose"):
        run_match(MatchConfig(workers=1), tiny_queries, [str(folder)], folder / "matched")
    assert sorted(p.name for p in folder.iterdir()) == ["c.parquet"]


@pytest.mark.parametrize("suffix", ["csv", "tsv", "jsonl"])
def test_a_url_with_whitespace_is_one_dropped_row_not_a_refused_file(tmp_path, tiny_queries, suffix):
    """The README's promise: such rows are dropped and counted; the file's other rows are matched."""
    rows = [("http://x/a b.jpg", "a red circle"), ("http://x/2.jpg", "a red square"), (" http://x/3.jpg", "red"),
            ("http://x/4.jpg\u0007", "red")]
    path = tmp_path / f"c.{suffix}"
    if suffix == "jsonl":
        path.write_text("".join(json.dumps({"url": u, "caption": c}) + "\n" for u, c in rows))
    else:
        sep = "," if suffix == "csv" else "\t"
        path.write_text(f"url{sep}caption\n" + "".join(f"{u}{sep}{c}\n" for u, c in rows))
    stats = run_match(MatchConfig(workers=1), tiny_queries, [str(path)], tmp_path / "m")
    assert stats["rows_in"] == 4 and stats["rows_matched"] == 1 and stats["rows_refused_url"] == 3
    assert stats["urls_refused"] == {"whitespace or control character in URL": 3}
    assert pq.read_table(next((tmp_path / "m").glob("*.parquet")))["url"].to_pylist() == ["http://x/2.jpg"]


def test_adding_the_identity_to_an_old_up_to_date_output_fails_in_one_line(tmp_path, tiny_queries):
    """A match output made before it recorded its row identity gains it when up to date, under its lock; an
    unreadable part is one line, not a traceback."""
    (tmp_path / "captions").mkdir()
    pq.write_table(pa.table({"url": ["http://x/1", "http://x/2"], "caption": ["a red circle", "photo"]}),
                   tmp_path / "captions" / "a.parquet")

    def match() -> dict:
        return run_match(MatchConfig(workers=1), tiny_queries, [str(tmp_path / "captions")], tmp_path / "matched")

    stats_file = tmp_path / "matched.stats.json"
    old = json.loads(json.dumps(match()))
    identity = old.pop("rows_identity")
    stats_file.write_text(json.dumps(old))
    assert match()["rows_identity"] == identity and json.loads(stats_file.read_text())["rows_identity"] == identity
    stats_file.write_text(json.dumps(old))
    next((tmp_path / "matched").glob("*.parquet")).unlink()
    with pytest.raises(CurationError, match="cannot record rows_identity"):
        match()
