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
