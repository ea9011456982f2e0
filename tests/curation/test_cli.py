"""The CLI: fast help, and bad input → one line naming the input, exit code 2, no output left behind."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation.cli import main
from curation.stages import dataset_config_type
from curation.typed import load_yaml
from tests.conftest import tree_env

CONFIGS = sorted((Path(__file__).parents[2] / "experiments" / "datasets").glob("*.yaml"))


def test_help_is_fast_and_imports_nothing_heavy():
    code = ("import sys, time; t = time.perf_counter(); from curation.cli import curation_commands, help_text; "
            "help_text(); [command.parser().format_help() for command in curation_commands()]; "
            "heavy = [m for m in ('pyarrow', 'img2dataset', 'matplotlib', 'torch', 'ahocorasick') "
            "if m in sys.modules]; "
            "print(heavy, time.perf_counter() - t)")
    heavy, seconds = subprocess.run([sys.executable, "-c", code], env=tree_env(), capture_output=True, text=True,
                                    check=True).stdout.rsplit(" ", 1)
    assert heavy == "[]" and float(seconds) < 1.0
    result = subprocess.run([sys.executable, "-m", "curation", "balance", "--help"], env=tree_env(),
                            capture_output=True, text=True)
    assert result.returncode == 0 and "--t T" in result.stdout and "--seed SEED" in result.stdout


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_example_configs_load(config):
    dataset = load_yaml(config, dataset_config_type())
    assert dataset.name == config.stem and dataset.captions


def parquet(path: Path, **columns) -> Path:
    pq.write_table(pa.table(columns), path)
    return path


def bad_caption_tables(tmp: Path) -> dict[str, tuple[Path, str]]:
    """name → (file, text the error must contain)."""
    (tmp / "nonutf8.csv").write_bytes(b"url,caption\nhttp://a/1.jpg,caf\xe9\n")
    (tmp / "nocaption.csv").write_text("url,text\nhttp://a/1.jpg,a cat\n")
    (tmp / "empty.parquet").write_bytes(b"")
    (tmp / "corrupt.parquet").write_bytes(b"PAR1 this is not parquet at all PAR1")
    (tmp / "nonutf8.jsonl").write_bytes(b'{"url": "http://a/1.jpg", "caption": "caf\xe9"}\n')
    return {
        "missing file": (tmp / "absent.parquet", "absent.parquet: no such file"),
        "missing column": (tmp / "nocaption.csv", "no column 'caption'"),
        "non-UTF-8 csv": (tmp / "nonutf8.csv", "not valid UTF-8"),
        "non-UTF-8 jsonl": (tmp / "nonutf8.jsonl", "not valid UTF-8"),
        "non-UTF-8 parquet": (parquet(tmp / "binary.parquet", url=["http://a/1.jpg"], caption=pa.array([b"caf\xe9"])),
                              "not valid UTF-8"),
        "null caption": (parquet(tmp / "nulls.parquet", url=["http://a/1.jpg", "http://a/2.jpg"],
                                 caption=["a cat", None]), "1 empty (null) values, first at row 1"),
        "empty parquet": (tmp / "empty.parquet", "file is empty (0 bytes)"),
        "parquet without rows": (parquet(tmp / "norows.parquet", url=pa.array([], pa.string()),
                                         caption=pa.array([], pa.string())), "has no rows"),
        "corrupt parquet": (tmp / "corrupt.parquet", "cannot read parquet"),
        "bad URL": (parquet(tmp / "badurl.parquet", url=["http://a/1.jpg", "a cat on a mat"], caption=["x", "y"]),
                    "'a cat on a mat' at row 1, not a URL"),
        "numbers as captions": (parquet(tmp / "ints.parquet", url=["http://a/1.jpg"], caption=[3]), "holds int64"),
    }


def run_cli(args: list[str], capsys) -> tuple[int, str]:
    code = main([str(a) for a in args])
    return code, capsys.readouterr().err


def test_bad_caption_tables(tmp_path, tiny_queries, capsys):
    cases = bad_caption_tables(tmp_path)
    good = parquet(tmp_path / "good.parquet", url=["http://a/0.jpg"], caption=["a red circle"])
    for name, (table, expected) in cases.items():
        out = tmp_path / "out" / name.replace(" ", "_")
        code, err = run_cli(["match", "--captions", good, table, "--queries", tiny_queries, "--out", out,
                             "--workers", "1"], capsys)
        lines = [line for line in err.splitlines() if line.strip() and "━" not in line]
        assert code == 2, name
        assert len(lines) == 1 and expected in lines[0] and str(table.name) in lines[0], (name, err)
        assert "Traceback" not in err
        assert not out.exists() and not out.with_name(out.name + ".stats.json").exists(), name
        assert not out.with_name(out.name + ".counts.parquet").exists(), name
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_bad_configs_and_sources(tmp_path, capsys):
    (tmp_path / "syntax.yaml").write_text("name: x\ncaptions: [a.parquet\n")
    (tmp_path / "unknown.yaml").write_text("name: x\ncaptions: [a.parquet]\nbalance: {tt: 3}\n")
    (tmp_path / "type.yaml").write_text("name: x\ncaptions: [a.parquet]\nbalance: {t: many}\n")
    (tmp_path / "missing.yaml").write_text("name: x\n")
    (tmp_path / "value.yaml").write_text("name: x\ncaptions: [a.parquet]\ndownload: {image_size: 0}\n")
    (tmp_path / "twice.yaml").write_text("name: x\ncaptions: [a.parquet]\nmatch:\n  workers: 1\nbalance: {t: 3}\n"
                                         "match:\n  workers: 2\n")
    (tmp_path / "nested.yaml").write_text("name: x\ncaptions: [a.parquet]\nbalance:\n  t: 3\n  seed: 1\n  t: 4\n")
    cases = {
        "syntax.yaml": "invalid YAML at line 3",
        "unknown.yaml": "balance: unknown setting 'tt'",
        "type.yaml": "balance.t: expected int, got 'many'",
        "missing.yaml": "missing required setting 'captions'",
        "value.yaml": "download.image_size must be >= 1",
        "absent.yaml": "absent.yaml: config file not found",
        "twice.yaml": "duplicate key 'match' at line 6 (first at line 3)",
        "nested.yaml": "duplicate key 't' at line 6 (first at line 4)",
    }
    for name, expected in cases.items():
        code, err = run_cli(["build", "-c", tmp_path / name], capsys)
        assert code == 2 and len(err.strip().splitlines()) == 1 and expected in err and name in err, (name, err)
    code, err = run_cli(["queries", "--unigrams", "none", "--wordnet_dir", tmp_path / "nowordnet",
                         "--out", tmp_path / "q.parquet"], capsys)
    assert code == 2 and "nowordnet: WordNet file data.noun not found" in err.strip().splitlines()[-1]
    assert not (tmp_path / "q.parquet").exists() and not (tmp_path / "q.stats.json").exists()
    code, err = run_cli(["balance", "--input", tmp_path / "nothing", "--out", tmp_path / "b"], capsys)
    assert code == 2 and "nothing.stats.json: match stats (run `curation match` first) not found" in err


def test_card_names_with_path_parts_are_refused(tmp_path, capsys):
    for name in ("../../x", "a/b", "..", ".hidden", "a\\b"):
        code, err = run_cli(["card", "--name", name, "--work_dir", tmp_path / "work", "--cards_dir",
                             tmp_path / "cards"], capsys)
        assert code == 2 and "a card name must be a plain name" in err and len(err.strip().splitlines()) == 1, name
    assert not any(tmp_path.rglob("*"))


def test_queries_out_must_be_a_file(tmp_path, capsys):
    (tmp_path / "folder").mkdir()
    for out, expected in ((f"{tmp_path}/new/", "--out must name a file"), (tmp_path / "folder", "is a folder")):
        code, err = run_cli(["queries", "--unigrams", "none", "--out", out], capsys)
        assert code == 2 and expected in err and len(err.strip().splitlines()) == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder"] and not any((tmp_path / "folder").iterdir())


def test_no_progress_line_before_an_error_when_stderr_is_not_a_terminal(tmp_path, tiny_queries, clean_env):
    captions = parquet(tmp_path / "c.parquet", url=["http://a/1.jpg"], caption=[None])
    result = subprocess.run([sys.executable, "-m", "curation", "match", "--captions", str(captions), "--queries",
                             str(tiny_queries), "--out", str(tmp_path / "m"), "--workers", "1"],
                            capture_output=True, text=True, env=clean_env)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [result.stderr.strip()]  # the error alone: no blank or stale bar line
    assert result.stderr.startswith("curation match: error: ")


def test_one_flag_style_old_spellings_still_work_with_one_deprecation_line(tmp_path, capsys):
    folder = tmp_path / "nowordnet"
    for wordnet, deprecated in ((["--wordnet_dir", folder], False), (["--wordnet-dir", folder], True),
                                ([f"--wordnet-dir={folder}"], True)):
        code, err = run_cli(["queries", "--unigrams", "none", *wordnet, "--out", tmp_path / "q.parquet"], capsys)
        lines = err.strip().splitlines()
        assert code == 2 and "WordNet file data.noun not found" in lines[-1], err
        assert lines[:-1] == (["curation queries: --wordnet-dir is spelt --wordnet_dir now (the old spelling still "
                               "works)"] if deprecated else []), err


def test_old_boolean_negations_still_work():
    import dataclasses

    from curation.cli import curation_commands

    parsed: list = []
    download = next(command for command in curation_commands() if command.name == "download")
    download = dataclasses.replace(download, run=parsed.append)  # the options it parsed, not a download
    for argv, expected in ((["--dedup_urls"], True), (["--no_dedup_urls"], False), (["--no-dedup-urls"], False),
                           (["--dedup-urls", "--no-overwrite"], True)):
        download(["--input", "x", *argv])
        assert parsed.pop().dedup_urls is expected, argv


def test_an_unknown_flag_is_refused_in_one_line(capsys):
    code, err = run_cli(["balance", "--url-colum", "x"], capsys)
    assert code == 2 and err.splitlines() == [
        "curation balance: error: unrecognized arguments: --url-colum x (see `curation balance --help`)"]
