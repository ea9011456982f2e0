"""`clipmodule fit` end to end: real LightningCLI, real MLflow (sqlite in a temp dir), real 2-process DDP."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from clipmodule.data.synthetic import CLASSNAMES, write_synthetic_shards
from tests.conftest import QUIET_WORKER, tree_env

REPO = Path(__file__).resolve().parents[3]
EXPERIMENTS = REPO / "experiments"
TINY = ["-c", str(EXPERIMENTS / "base.yaml"), "-c", str(EXPERIMENTS / "tiny_cpu.yaml")]


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cli_shards")
    write_synthetic_shards(root / "train", 4, 48, image_size=32)
    write_synthetic_shards(root / "val", 1, 48, image_size=32, first_sample=10_000)
    return root


def clipmodule(args: list[str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = tree_env(**QUIET_WORKER)
    return subprocess.run([sys.executable, "-m", "clipmodule", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def _runs(cwd: Path, experiment: str):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{cwd / 'mlruns.db'}")
    return client, client.search_runs([client.get_experiment_by_name(experiment).experiment_id])


def test_tiny_fit_learns_is_tracked_in_mlflow_and_its_checkpoint_validates(shards, tmp_path, monkeypatch):
    done = clipmodule(["fit", *TINY, "--data.train_shards", str(shards / "train"),
                       "--data.val_shards", str(shards / "val"), "--data.zeroshot_shards", str(shards / "val"),
                       "--data.zeroshot_classnames", "[" + ", ".join(CLASSNAMES) + "]",
                       "--trainer.max_steps", "24", "--trainer.val_check_interval", "12", "--data.batch_size", "32",
                       "--trainer.log_every_n_steps", "2", "--checkpoint.every_n_train_steps", "12",
                       "--trainer.logger.init_args.run_name", "tiny-clip"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    for notice in ("set_vital", "on_after_batch_transfer", "LeafSpec", "Tip:"):  # known-harmless, silenced
        assert notice not in done.stdout + done.stderr, notice
    client, runs = _runs(tmp_path, "tiny_cpu")
    (run,) = runs
    assert run.info.status == "FINISHED" and run.info.run_name == "tiny-clip"
    assert run.data.params["loss"] == "clip" and run.data.params["network/vision/image_size"] == "32"
    assert run.data.params["batch_size"] == "32" and run.data.params["global_batch_size"] == "32"
    assert len(run.data.tags["data_card_hash"]) == 64
    for metric in ("val/zeroshot_top1", "val/image_to_text_R5", "data/corrupt_samples", "train/samples_seen"):
        assert metric in run.data.metrics
    losses = [m.value for m in sorted(client.get_metric_history(run.info.run_id, "train/loss"), key=lambda m: m.step)]
    assert len(losses) >= 10 and sum(losses[-4:]) / 4 < sum(losses[:4]) / 4 - 0.2, losses
    folder = tmp_path / run.data.tags["run_folder"]
    assert (folder / "config.yaml").is_file()
    assert sorted(p.name for p in (folder / "checkpoints").iterdir()) == [
        "last.ckpt", "step00000012.ckpt", "step00000024.ckpt"]
    assert torch.load(folder / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 24

    from clipmodule.cli import main  # in this process: the dispatcher's own path, without a second start-up

    monkeypatch.chdir(tmp_path)  # (and without the progress bar the CLI otherwise always adds)
    assert main(["validate", *TINY, "--data.val_shards", str(shards / "val"), "--data.num_workers", "0",
                 "--trainer.enable_progress_bar", "false",
                 "--ckpt_path", str(folder / "checkpoints" / "last.ckpt")]) == 0


def test_two_process_ddp_fit_on_cpu_runs_to_the_end(shards, tmp_path):
    done = clipmodule(["fit", *TINY, "--data.train_shards", str(shards / "train"), "--trainer.devices", "2",
                       "--trainer.strategy", "ddp", "--data.num_workers", "0", "--data.batch_size", "16",
                       "--trainer.max_steps", "4", "--trainer.log_every_n_steps", "1", "--model.local_loss", "true"],
                      cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    _, (run,) = _runs(tmp_path, "tiny_cpu")
    assert run.info.status == "FINISHED"
    assert run.data.params["trainer/world_size"] == "2" and run.data.params["global_batch_size"] == "32"
    assert run.data.metrics["train/samples_seen"] == 4 * 32


def _one_line_error(args: list[str], capsys) -> str:
    """Runs `clipmodule <args>` in this process (the dispatcher's real path) and returns its error line."""
    from clipmodule.cli import main

    capsys.readouterr()
    code = main(args)
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith(f"clipmodule {args[0]}: error:")]
    assert code == 2 and len(errors) == 1 and "Traceback" not in err, err[-3000:]
    return errors[0]


def test_bad_input_gives_one_line_naming_it(shards, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    missing = tmp_path / "nowhere"
    assert str(missing) in _one_line_error(["fit", *TINY, "--data.train_shards", str(missing)], capsys)
    broken = tmp_path / "broken.yaml"
    broken.write_text("trainer: [unclosed\n")
    assert "broken.yaml: malformed YAML" in _one_line_error(["fit", *TINY, "-c", str(broken)], capsys)
    typo = tmp_path / "typo.yaml"
    typo.write_text("trainer:\n  max_stepz: 3\n")
    assert "max_stepz" in _one_line_error(["fit", *TINY, "-c", str(typo)], capsys)
    corrupt = tmp_path / "corrupt.ckpt"
    corrupt.write_bytes(b"PK\x03\x04 not really a checkpoint")
    line = _one_line_error(["validate", *TINY, "--data.val_shards", str(shards / "val"),
                            "--ckpt_path", str(corrupt)], capsys)
    assert "corrupt.ckpt" in line and corrupt.read_bytes() == b"PK\x03\x04 not really a checkpoint"


@pytest.mark.parametrize("recipe", sorted(p.name for p in EXPERIMENTS.glob("*.yaml") if p.name != "base.yaml"))
def test_every_experiment_config_parses_and_instantiates(recipe, tmp_path, monkeypatch):
    from clipmodule.train.cli import build_cli

    monkeypatch.chdir(tmp_path)
    local = ["--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.num_nodes", "1",
             "--trainer.strategy", "auto", "--trainer.precision", "32-true"]
    chain = [EXPERIMENTS / "base.yaml", EXPERIMENTS / recipe]
    underlying = EXPERIMENTS / (recipe.rsplit("_", 1)[0] + ".yaml")  # tiny_cpu_siglip.yaml overlays tiny_cpu.yaml
    if underlying.is_file():
        chain.insert(1, underlying)
    if "init_from" in (yaml.safe_load((EXPERIMENTS / recipe).read_text()).get("model") or {}):
        import clipmodule  # a fine-tuning recipe names no weights of its own: start it from a tiny model's

        local += ["--model.init_from", str(clipmodule.save_checkpoint(clipmodule.create_model("tiny-vit"),
                                                                       tmp_path / "start.safetensors"))]
    cli = build_cli([arg for path in chain for arg in ("-c", str(path))] + local)
    assert cli.model.model.config.vision.image_size == cli.datamodule.image_size
    assert cli.config.data.train_shards and cli.config.model.optim.lr > 0
    if recipe.startswith("paper_"):  # the paper: 32,768 pairs per step for 32 epochs
        trainer = yaml.safe_load((EXPERIMENTS / recipe).read_text())["trainer"]
        assert cli.datamodule.batch_size * trainer["devices"] * trainer["num_nodes"] == 32768
        assert trainer["max_epochs"] == 32 and trainer["precision"] == "bf16-mixed"
