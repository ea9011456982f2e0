"""The tests test the tree they stand in: this process and every process they launch import `clipmodule` and
`curation` from this repository, not from another checkout installed in the environment (tests/conftest.py).
A worker started from a temporary folder used to import whichever `clipmodule` was installed."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import clipmodule
import curation
from tests.conftest import QUIET_WORKER, REPO, tree_env

# A script run from elsewhere (as the multi-rank workers are), and a child it spawns (as `mp.spawn` does).
WHERE = textwrap.dedent("""
    import json, multiprocessing, sys

    def where(_=None):
        import clipmodule, curation
        return [clipmodule.__file__, curation.__file__]

    if __name__ == "__main__":
        with multiprocessing.get_context("spawn").Pool(1) as pool:
            print(json.dumps(where() + pool.map(where, [0])[0]))
""")


def inside_the_tree(file: str) -> bool:
    return REPO in Path(file).resolve().parents


def test_this_process_imports_the_tree_under_test():
    assert inside_the_tree(clipmodule.__file__) and inside_the_tree(curation.__file__)


def test_every_launched_worker_imports_the_tree_under_test(tmp_path):
    script = tmp_path / "where.py"
    script.write_text(WHERE)
    for env in (None, tree_env(), tree_env(**QUIET_WORKER)):  # inherited, and as the tests pass it
        done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        files = json.loads(done.stdout)
        assert len(files) == 4
        assert all(map(inside_the_tree, files)), files
