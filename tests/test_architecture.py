"""The architecture rules, kept by tools: the import contracts in pyproject.toml hold, and the core
(`load`/`tokenize`/`create_model`) and both CLIs' `--help` run without the training, tracking or cluster stacks.

Each check runs in a fresh interpreter: this test process has long since imported everything."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import tree_env

ROOT = Path(__file__).resolve().parents[1]

# What a core install (`pip install clipmodule`, no extras) does not have: importing any of them from the
# core, even lazily, breaks `clipmodule.load` there.
HEAVY = ("lightning", "pytorch_lightning", "mlflow", "ray", "img2dataset", "pyarrow")


def _run_python(code: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        env=tree_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _loaded_modules(code: str) -> set[str]:
    """Top-level names of the modules that `code` left in sys.modules (it must print nothing else last)."""
    report = """
        import json as _json, sys as _sys
        print(_json.dumps(sorted({name.split(".")[0] for name in _sys.modules})))
    """
    result = _run_python(textwrap.dedent(code) + textwrap.dedent(report))
    assert result.returncode == 0, result.stderr[-4000:]
    return set(json.loads(result.stdout.strip().splitlines()[-1]))


def test_import_contracts_hold():
    lint_imports = Path(sys.executable).with_name("lint-imports")
    command = [str(lint_imports)] if lint_imports.exists() else [shutil.which("lint-imports") or "lint-imports"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-2000:]
    assert " 0 broken" in result.stdout, result.stdout[-2000:]  # it really checked the contracts


def test_the_core_loads_none_of_the_heavy_stacks(tmp_path):
    checkpoint = tmp_path / "tiny.safetensors"
    loaded = _loaded_modules(f"""
        import clipmodule, clipmodule.api, clipmodule.models, clipmodule.tokenizer
        from PIL import Image

        model = clipmodule.create_model("tiny-vit")
        tokens = clipmodule.tokenize(["a cat"])
        assert tuple(tokens.shape) == (1, 77), tokens.shape
        clipmodule.save_checkpoint(model, {str(checkpoint)!r})
        reloaded, preprocess = clipmodule.load({str(checkpoint)!r})
        image = preprocess(Image.new("RGB", (64, 64), "red")).unsqueeze(0)
        logits_per_image, _ = reloaded(image, tokens)
        assert tuple(logits_per_image.shape) == (1, 1), logits_per_image.shape
    """)
    assert "torch" in loaded  # the snippet really ran the model
    assert sorted(loaded & set(HEAVY)) == []


@pytest.mark.parametrize(
    ("program", "forbidden"),
    [
        # the dispatcher's --help imports no command, so not even torch
        ("clipmodule", HEAVY + ("torch",)),
        ("curation", HEAVY),
    ],
)
def test_help_loads_none_of_the_heavy_stacks(program, forbidden):
    loaded = _loaded_modules(f"""
        import runpy, sys

        sys.argv = [{program!r}, "--help"]
        try:
            runpy.run_module({program!r}, run_name="__main__", alter_sys=True)
        except SystemExit as exit:
            assert exit.code in (0, None), exit.code
    """)
    assert program in loaded
    assert sorted(loaded & set(forbidden)) == []


def test_a_command_whose_extra_is_missing_names_the_extra():
    """On a core-only install `clipmodule fit` / `curation match` say which extra to install, exit 2."""
    result = _run_python("""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("lightning", "ahocorasick"):
                    raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        sys.meta_path.insert(0, Block())
        from clipmodule.cli import main as clipmodule_main
        from curation.cli import main as curation_main
        print(clipmodule_main(["fit", "--help"]), curation_main(["match", "--captions", "x", "--queries", "y",
                                                                   "--out", "z"]))
    """)
    assert result.stdout.split()[-2:] == ["2", "2"], result.stderr
    lines = result.stderr.strip().splitlines()
    assert any(line.startswith("clipmodule fit: error: needs 'lightning'") and "clipmodule[train]" in line
               for line in lines), lines
    assert any(line.startswith("curation match: error: needs 'ahocorasick'") and "clipmodule[curation]" in line
               for line in lines), lines


# DESIGN.md's sizes that ruff has no rule for (complexity, branches, arguments and statements are ruff's).
MAX_FUNCTION_LINES = 60
MAX_FILE_LINES = 420  # "~400": the two files at the edge (curation/config.py, clipformats/embeddings.py) fit


def _library_files() -> list[Path]:
    return sorted(path for package in ("clipformats", "clipmodule", "curation", "demo")
                  for path in (ROOT / package).rglob("*.py"))


def test_functions_and_files_stay_within_designs_sizes():
    import ast

    long_functions, long_files = [], []
    for path in _library_files():
        text = path.read_text(encoding="utf-8")
        if len(text.splitlines()) > MAX_FILE_LINES:
            long_files.append(f"{path.relative_to(ROOT)}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long_functions.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}: {lines} lines")
    assert not long_functions, long_functions
    assert not long_files, long_files
