"""`bench/gpu_check.sh --dry-run` runs every step of the GPU check on the CPU at tiny sizes and writes its
figures; the report fails a check when a figure is missing or losses drift apart."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))
from gpu_check import build_results, loss_check  # noqa: E402 (bench/ is not a package)


def tree_env() -> dict[str, str]:
    """Worker processes import the tree under test, not an installed copy."""
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "PYTHON": sys.executable}


def test_the_dry_run_runs_every_step_and_writes_its_figures(tmp_path):
    out = tmp_path / "out"
    done = subprocess.run(["bash", str(REPO / "bench" / "gpu_check.sh"), "--dry-run", "--out", str(out)],
                          cwd=tmp_path, env=tree_env(), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    results = json.loads((out / "results.json").read_text())
    assert all(results["checks"].values()), results["checks"]
    assert results["settings"]["mode"] == "dry-run" and results["settings"]["model"] == "tiny-vit"
    for name in ("clipmodule fit", "open_clip_train", "clipmodule fit, model.compile"):
        assert results["fit"][name]["samples_per_s"] > 0, name
    assert results["train_flops_per_sample"] > 0
    steps = results["settings"]["steps"]
    for check in ("bf16_vs_fp32", "compile_vs_eager"):
        assert results[check]["steps"] == steps and results[check]["reference"] != results[check]["other"], check
    assert set(results["eval"]["same"]) == {"clipmodule eval", "CLIP_benchmark"}
    assert "| clipmodule fit |" in (out / "results.md").read_text()


def test_losses_that_drift_apart_or_stop_short_fail_the_check():
    assert loss_check([4.0, 3.9], [4.01, 3.91], 2, 0.02)["ok"]
    assert not loss_check([4.0, 3.9], [4.0, 3.5], 2, 0.02)["ok"]  # 10% apart at the second step
    assert not loss_check([4.0, 3.9], [4.0], 2, 0.02)["ok"]  # a run that stopped early


def test_a_missing_figure_fails_its_check(tmp_path):
    (tmp_path / "settings.json").write_text(json.dumps({"batch_size": 16, "accelerator": "gpu"}))
    args = SimpleNamespace(window=3, loss_steps=6, peak_tflops=989.0, tolerance=0.02)
    checks = build_results(tmp_path, args)["checks"]
    assert not any(checks.values())  # nothing ran: no figure, no losses, no eval, no CUDA test passed
