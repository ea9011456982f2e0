"""`clipmodule compare` against an sqlite store and against a real `mlflow server` on 127.0.0.1."""

import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from PIL import Image

from clipmodule.cli import main


def _log_runs(tracking_uri, experiment="demo"):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    experiment_id = client.create_experiment(experiment)
    for name, loss, lr in (("clip-loss", "clip", "0.001"), ("siglip-loss", "siglip", "0.0005")):
        run = client.create_run(experiment_id, run_name=name, tags={"data_card_hash": "abc123def4567890"})
        for key, value in {"loss": loss, "lr": lr, "batch_size": "64"}.items():
            client.log_param(run.info.run_id, key, value)
        for step in range(5):
            client.log_metric(run.info.run_id, "train/loss", 4.0 - step * (0.5 if loss == "clip" else 0.3), step=step)
            client.log_metric(run.info.run_id, "samples_seen", 64 * (step + 1), step=step)
        for step in (2, 4):
            client.log_metric(run.info.run_id, "val/zeroshot_top1", 0.1 * step, step=step)
        client.set_terminated(run.info.run_id)


def test_compare_on_sqlite(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    _log_runs(uri)
    out = tmp_path / "report"
    assert main(["compare", "--experiment", "demo", "--tracking.uri", uri, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "clip-loss" in printed and "siglip-loss" in printed and "abc123def456" in printed
    report = (out / "compare.md").read_text()
    assert "| run | status | data card | loss | lr |" in report  # params that differ, batch_size does not
    assert "0.4" in report  # final zero-shot top-1 of both runs
    for name in ("train_loss_vs_step", "train_loss_vs_samples", "val_zeroshot_top1_vs_step"):
        with Image.open(out / f"{name}.png") as image:
            assert image.size[0] > 400
    assert main(["compare", "-e", "demo", "--tracking.uri", uri, "--runs", "siglip-loss",
                 "--filter", "params.loss = 'siglip'", "--out", str(out / "one")]) == 0
    assert "clip-loss |" not in (out / "one" / "compare.md").read_text()


def test_compare_bad_input_is_one_line(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    _log_runs(uri)
    cases = [
        (["--experiment", "nope", "--tracking.uri", uri], "no experiment 'nope'"),
        (["--experiment", "demo", "--tracking.uri", uri, "--metrics", "val/top9"], "metric 'val/top9' was not logged"),
        (["--experiment", "demo", "--tracking.uri", uri, "--runs", "ghost"], "no run named 'ghost'"),
        (["--experiment", "demo", "--tracking.uri", uri, "--params", "lr,nosuch"],
         "param 'nosuch' was not logged by any selected run (logged: batch_size, loss, lr)"),
        (["--tracking.uri", f"sqlite:///{tmp_path / 'missing.db'}"], "no MLflow store"),
        (["--tracking.uri", "http://127.0.0.1:9"], "127.0.0.1:9"),
    ]
    for args, message in cases:
        capsys.readouterr()
        assert main(["compare", *args, "--out", str(tmp_path / "x")]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    assert not (tmp_path / "missing.db").exists()


def test_a_uri_naming_no_mlflow_store_is_one_line_and_left_untouched(tmp_path, capsys):
    import sqlite3

    (tmp_path / "notes.txt").write_text("not a database\n")
    (tmp_path / "folder.db").mkdir()
    with sqlite3.connect(tmp_path / "other.db") as connection:  # somebody else's database
        connection.execute("CREATE TABLE photos (id INTEGER)")
    other = (tmp_path / "other.db").read_bytes()
    cases = [
        (f"sqlite:///{tmp_path / 'notes.txt'}", "notes.txt: not an sqlite database, so not an MLflow store"),
        (f"sqlite:///{tmp_path / 'folder.db'}", "folder.db: a folder, not an MLflow store"),
        (f"sqlite:///{tmp_path / 'other.db'}", "other.db: an sqlite database without MLflow's tables"),
        ("foo://bar", "foo://bar: not a tracking URI MLflow reads"),
    ]
    for uri, message in cases:
        capsys.readouterr()
        assert main(["compare", "--tracking.uri", uri, "--out", str(tmp_path / "x")]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    assert (tmp_path / "other.db").read_bytes() == other and not (tmp_path / "x").exists()


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.timeout(240)
def test_compare_against_a_real_mlflow_server(tmp_path, capsys):
    port = _free_port()
    mlflow_bin = [sys.executable, "-m", "mlflow"]
    server = subprocess.Popen(
        [*mlflow_bin, "server", "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}", "--host", "127.0.0.1",
         "--port", str(port), "--workers", "1", "--default-artifact-root", str(tmp_path / "artifacts")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 180
        while True:
            try:
                urllib.request.urlopen(f"{uri}/health", timeout=2)
                break
            except OSError:
                assert server.poll() is None and time.time() < deadline, "mlflow server did not come up"
                time.sleep(1)
        _log_runs(uri)
        assert main(["compare", "-e", "demo", "--tracking.uri", uri, "--out", str(tmp_path / "r")]) == 0
        assert "siglip-loss" in capsys.readouterr().out
        assert (tmp_path / "r" / "train_loss_vs_samples.png").exists()
    finally:
        import os
        import signal

        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
