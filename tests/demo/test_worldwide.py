"""`python -m demo.worldwide`: English and German captions, each matched against its language's queries and
capped by its own t (small: 3,000 captions)."""

from __future__ import annotations

from demo.worldwide import main, run


def test_each_language_is_matched_and_capped_by_its_own_t(tmp_path, capsys):
    summary = run(tmp_path / "worldwide", captions=3000, t=40)
    languages = summary["languages"]
    assert set(languages) == {"en", "de"} and languages["en"]["t"] == 40 and languages["de"]["t"] < 40
    assert languages["en"]["captions"] > 1800 and languages["de"]["captions"] > 900  # lid.176 on 3-5 word alt-texts
    for counts in languages.values():
        assert counts["kept"] < counts["matched"] <= counts["captions"]
    assert main(["--out", str(tmp_path / "worldwide"), "--captions", "3000", "--t", "40"]) == 0  # up to date
    assert "| de |" in capsys.readouterr().out


def test_other_captions_settings_rebuild_the_captions_and_every_stage_after(tmp_path):
    first = run(tmp_path / "worldwide", captions=600, t=40)
    again = run(tmp_path / "worldwide", captions=900, t=40)
    assert sum(r["captions"] for r in first["languages"].values()) <= 600
    assert 600 < sum(r["captions"] for r in again["languages"].values()) <= 900
    assert run(tmp_path / "worldwide", captions=900, t=30)["languages"]["en"]["t"] == 30  # another t: rebalanced


def test_make_demo_runs_the_worldwide_step_and_prints_rows_per_language(tmp_path):
    from rich.console import Console

    from demo.app import DemoPlan, _paths, run_worldwide, worldwide_line

    plan = DemoPlan.small(tmp_path)
    paths = _paths(tmp_path)
    summary = run_worldwide(Console(quiet=True), plan, paths)  # `python -m demo.worldwide`, its own process
    assert sum(r["captions"] for r in summary["languages"].values()) <= plan.worldwide_captions == 3000
    line = worldwide_line(summary)
    assert line.startswith("worldwide curation, rows per language") and "; de " in line and "\n" not in line
    assert "demo.worldwide" in paths["log"].read_text()


def test_a_half_written_captions_table_is_rewritten_atomically(tmp_path, monkeypatch):
    import contextlib
    from pathlib import Path

    import pyarrow.parquet as pq

    from demo import worldwide

    table = tmp_path / "captions" / "captions.parquet"
    table.parent.mkdir()
    table.write_bytes(b"PAR1 cut short")  # what a killed non-atomic write leaves
    worldwide.write_captions(table, 30, 0)
    assert pq.read_table(table).num_rows == 30

    def killed(rows, where, **options):
        Path(where).write_bytes(b"PAR1 half")  # killed halfway through the write
        raise KeyboardInterrupt

    monkeypatch.setattr(worldwide.pq, "write_table", killed)
    with contextlib.suppress(KeyboardInterrupt):
        worldwide.write_captions(table, 45, 0)
    monkeypatch.undo()
    assert pq.read_table(table).num_rows == 30 and list(table.parent.iterdir()) == [table]  # the old one, whole
