"""The stage protocol: `finished()` only looks; `running()` prepares the output and takes back bad runs."""

from __future__ import annotations

import json

import pytest

from curation.errors import CurationError
from curation.stage import Stage, stats_path


def _tree(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_finished_is_a_pure_check_and_running_does_the_clean_up(tmp_path):
    out = tmp_path / "matched"
    out.mkdir()
    (out / "00000.parquet").write_bytes(b"done")
    (out / ".00001.parquet.tmp-99").write_bytes(b"half")
    stats_path(out).write_text(json.dumps({"stage": "match", "finished": False, "fingerprint": {"t": 1}}))
    before = _tree(tmp_path)
    assert Stage("match", out, {"t": 1}).finished() is None  # unfinished: resume
    assert Stage("match", out, {"t": 2}).finished() is None  # other settings: refused only when run
    assert _tree(tmp_path) == before
    with pytest.raises(CurationError, match="other settings"), Stage("match", out, {"t": 2}).running():
        pass
    assert _tree(tmp_path) == before
    stage = Stage("match", out, {"t": 1})
    with stage.running():
        assert _tree(out) == ["00000.parquet"]  # resumed: the finished piece kept, the temporary gone
        stage.finish({"rows": 1})
    assert Stage("match", out, {"t": 1}).finished()["rows"] == 1


def test_an_output_that_is_inside_or_contains_its_input_is_refused_before_anything_is_touched(tmp_path, capsys):
    from curation.cli import main
    from tests.curation.test_balancing import write_matched

    write_matched(tmp_path / "matched", shards=2)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    for out, relation in ((tmp_path / "matched", "is"), (tmp_path / "matched" / "sub", "lies inside"),
                          (tmp_path, "contains")):
        for overwrite in ([], ["--overwrite"]):
            code = main(["balance", "--input", str(tmp_path / "matched"), "--out", str(out), *overwrite])
            err = capsys.readouterr().err.strip()
            assert code == 2 and len(err.splitlines()) == 1, err
            assert f"this output {relation} the input" in err
            assert "--overwrite" not in err and "earlier" not in err  # neither blamed nor invited
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before
    matched, balanced = str(tmp_path / "matched"), str(tmp_path / "balanced")
    assert main(["balance", "--input", matched, "--out", balanced, "--t", "50"]) == 0
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    capsys.readouterr()
    for out in ("balanced", "balanced/shards"):
        code = main(["download", "--input", str(tmp_path / "balanced"), "--out", str(tmp_path / out), "--overwrite"])
        assert code == 2 and "this output " in capsys.readouterr().err
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


def test_overwrite_removes_only_what_the_stage_made(tmp_path):
    out = tmp_path / "balanced"
    out.mkdir()
    (out / "00000.parquet").write_bytes(b"made")
    (out / "notes.txt").write_text("mine")
    stats_path(out).write_text(json.dumps({"stage": "balance", "finished": True, "fingerprint": {"t": 1}}))
    with pytest.raises(CurationError, match="notes.txt: not made by `balance`"), \
            Stage("balance", out, {"t": 2}, overwrite=True).running():
        pass
    assert (out / "00000.parquet").exists() and (out / "notes.txt").exists()
    (out / "notes.txt").unlink()
    with Stage("balance", out, {"t": 2}, overwrite=True).running() as stage:
        assert not (out / "00000.parquet").exists()
        stage.finish({})
    # another stage's output is never this stage's to replace, overwrite or not
    matched = tmp_path / "matched"
    matched.mkdir()
    stats_path(matched).write_text(json.dumps({"stage": "match", "finished": True, "fingerprint": {}}))
    with pytest.raises(CurationError, match="made by `curation match`, not `balance`"), \
            Stage("balance", matched, {"t": 2}, overwrite=True).running():
        pass
    assert stats_path(matched).exists()


def test_temporaries_of_killed_runs_beside_and_inside_the_output_are_cleaned(tmp_path):
    out = tmp_path / "queries.parquet"
    leftovers = [tmp_path / ".queries.parquet.tmp-123", tmp_path / ".queries.stats.json.tmp-9"]
    for path in leftovers:
        path.write_bytes(b"half")
    (tmp_path / ".other.parquet.tmp-5").write_bytes(b"not ours")
    with Stage("queries", out, {"a": 1}).running() as stage:  # a fresh run
        stage.finish({})
    assert not any(p.exists() for p in leftovers) and (tmp_path / ".other.parquet.tmp-5").exists()


def test_an_output_under_a_file_is_one_line(tmp_path, tiny_queries, capsys):
    from curation.cli import main

    (tmp_path / "file.parquet").write_bytes(b"x")
    code = main(["match", "--captions", str(tiny_queries), "--queries", str(tiny_queries),
                 "--out", str(tmp_path / "file.parquet" / "matched")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.endswith("file.parquet is a file, not a folder") and len(err.splitlines()) == 1
