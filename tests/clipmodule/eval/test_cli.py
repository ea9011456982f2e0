"""`clipmodule eval …` and `clipmodule test --checkpoint …` through the real dispatcher: JSON files, MLflow runs
(sqlite), a suite table, shipped configs, and one-line errors (exit 2) on bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

from clipmodule.checkpoints.io import save_checkpoint
from clipmodule.cli import main as clipmodule
from clipmodule.eval.readers.builtin import SHAPE_CLASSES, render_shapes
from clipmodule.models import create_model

REPO = Path(__file__).resolve().parents[3]
B32 = "vit-base-p32_clip-openai-pre_3rdparty_in1k"


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """A tiny CLIP checkpoint, shape images as train/test folders, a captions CSV, an MLflow store."""
    root = tmp_path_factory.mktemp("eval_cli")
    torch.manual_seed(0)
    save_checkpoint(create_model("tiny-vit"), root / "tiny.safetensors")
    images, labels, captions = render_shapes(per_class=12)
    seen: dict[int, int] = {}
    rows = ["path,caption"]
    for index, (image, label) in enumerate(zip(images, labels)):
        if label == 3:
            continue
        seen[label] = seen.get(label, 0) + 1
        split = "train" if seen[label] <= 8 else "test"
        path = root / split / SHAPE_CLASSES[label] / f"{index}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path)
        if split == "test":
            rows += [f"{split}/{SHAPE_CLASSES[label]}/{index}.png,{caption}" for caption in captions[index]]
    (root / "captions.csv").write_text("\n".join(rows) + "\n")
    return root


def _tracking(root: Path) -> list[str]:
    return ["--tracking.uri", f"sqlite:///{root / 'mlruns.db'}", "--tracking.experiment", "eval-tests"]


def _run(root: Path, run_id: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(f"sqlite:///{root / 'mlruns.db'}").get_run(run_id)


def test_zeroshot_command_writes_json_and_mlflow(work, capsys):
    from clipmodule.api import load
    from clipmodule.eval.readers import open_classification
    from clipmodule.eval.tasks import zeroshot_classification

    output = work / "zs.json"
    code = clipmodule(["eval", "zeroshot", "--model", str(work / "tiny.safetensors"), "--dataset", str(work / "test"),
                       "--templates", "simple", "--output", str(output), *_tracking(work)])
    assert code == 0, capsys.readouterr().err
    record = json.loads(output.read_text())
    assert record["task"] == "zeroshot" and record["dataset"] == str(work / "test")
    model, preprocess = load(work / "tiny.safetensors")
    dataset = open_classification(str(work / "test"), preprocess)
    assert dataset.classnames == ["circle", "square", "triangle"]
    direct = zeroshot_classification(model, dataset, dataset.classnames, ["a photo of a {}."])
    assert record["metrics"] == pytest.approx(direct)
    run = _run(work, record["mlflow_run_id"])
    assert run.info.status == "FINISHED" and run.data.params["task"] == "zeroshot"
    assert run.data.metrics["top1"] == pytest.approx(record["metrics"]["top1"])
    assert run.data.tags["results_json"] == str(output.resolve())
    assert "top1" in capsys.readouterr().out


def test_suite_writes_one_table_and_one_run(work, capsys):
    suite = {
        "name": "shapes",
        "model": str(work / "tiny.safetensors"),
        "output": str(work / "suite"),
        "tasks": [
            {"name": "shapes-zeroshot", "task": "zeroshot", "dataset": str(work / "test"), "templates": "simple"},
            {"name": "captions", "task": "retrieval", "dataset": str(work / "captions.csv"), "recall_at": [1, 5]},
            {"name": "probe", "task": "linear-probe", "train": str(work / "train"), "test": str(work / "test")},
        ],
        "probe": {"log10_c_range": [-1, 3], "steps_per_decade": 1, "max_iter": 200, "threads": 1},
    }
    (work / "suite.yaml").write_text(yaml.safe_dump(suite))
    assert clipmodule(["eval", "suite", "-c", str(work / "suite.yaml"), *_tracking(work)]) == 0, capsys.readouterr().err
    table = (work / "suite" / "shapes.md").read_text()
    assert "| task | kind | data | top-1 | mean recall | I→T R@1 | I→T R@5 | T→I R@1 | T→I R@5 |" in table
    rows = table.split("\n\nGrouped averages")[0]
    assert [line.split(" | ")[0] for line in rows.splitlines() if line.startswith("| ") and "---" not in line][1:] == [
        "| shapes-zeroshot", "| captions", "| probe"]
    assert "| Average | " in table  # zero-shot and retrieval rows; a linear probe joins no group
    record = json.loads((work / "suite" / "shapes.json").read_text())
    assert set(record["metrics"]) == {"shapes-zeroshot", "captions", "probe"}
    assert record["metrics"]["captions"]["num_captions"] == 2 * record["metrics"]["captions"]["num_images"] == 24
    run = _run(work, record["mlflow_run_id"])
    for key in ("shapes-zeroshot/top1", "captions/image_to_text_R5", "probe/top1", "probe/best_C", "avg/all"):
        assert key in run.data.metrics
    captions = record["metrics"]["captions"]
    mean_r1 = (captions["image_to_text_R@1"] + captions["text_to_image_R@1"]) / 2  # DataComp's retrieval metric
    assert run.data.metrics["avg/all"] == pytest.approx((record["metrics"]["shapes-zeroshot"]["top1"] + mean_r1) / 2)
    assert run.data.metrics["avg/retrieval"] == pytest.approx(mean_r1) and record["groups"][-1]["count"] == 2
    assert run.data.metrics["probe/top1"] == pytest.approx(record["metrics"]["probe"]["top1"])


@pytest.mark.parametrize("case", ["class-names", "empty-folder", "unreadable-image", "malformed-yaml",
                                  "unknown-task", "suite-class-names", "missing-model", "unreachable-mlflow"])
def test_bad_input_is_one_line_and_exit_2(work, tmp_path, capsys, monkeypatch, case):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # restored afterwards (the CLI only sets a default)
    model = ["--model", str(work / "tiny.safetensors")]
    zeroshot = ["eval", "zeroshot", *model, "--tracking.uri", "none", "--output", str(tmp_path / "out.json")]
    if case == "class-names":
        argv, expected = [*zeroshot, "--dataset", str(work / "test"), "--classnames", "no_such_names.txt"], \
            "no_such_names.txt: no such class-name file"
    elif case == "empty-folder":
        (tmp_path / "empty").mkdir()
        argv = [*zeroshot, "--dataset", str(tmp_path / "empty")]
        expected = f"{tmp_path / 'empty'}: empty dataset folder"
    elif case == "unreadable-image":
        (tmp_path / "data" / "cat").mkdir(parents=True)
        (tmp_path / "data" / "cat" / "x.jpg").write_bytes(b"\xff\xd8 truncated")
        argv, expected = [*zeroshot, "--dataset", str(tmp_path / "data")], "x.jpg: unreadable image"
    elif case == "malformed-yaml":
        (tmp_path / "suite.yaml").write_text("tasks: [ {task: zeroshot\n")
        argv, expected = ["eval", "suite", "-c", str(tmp_path / "suite.yaml")], "suite.yaml: malformed YAML"
    elif case == "unknown-task":
        (tmp_path / "suite.yaml").write_text("tasks:\n  - {task: captioning, dataset: builtin:digits}\n")
        argv, expected = ["eval", "suite", "-c", str(tmp_path / "suite.yaml"), *model], "unknown task 'captioning'"
    elif case == "suite-class-names":  # the second row's missing file stops the suite before the first row runs
        (tmp_path / "suite.yaml").write_text(yaml.safe_dump({"output": str(tmp_path / "suite"), "tasks": [
            {"task": "retrieval", "dataset": str(work / "captions.csv")},
            {"task": "zeroshot", "dataset": str(work / "test"), "classnames": str(tmp_path / "gone.txt")}]}))
        argv = ["eval", "suite", "-c", str(tmp_path / "suite.yaml"), *model]
        expected = "gone.txt: no such class-name file"
    elif case == "missing-model":
        argv, expected = ["eval", "retrieval", "--model", "nope.safetensors", "--dataset", "builtin:skimage"], \
            "nope.safetensors: neither an existing checkpoint path nor a model name"
    else:  # nothing listens on port 9: the results are written all the same
        argv = ["eval", "zeroshot", *model, "--dataset", str(work / "test"), "--templates", "simple",
                "--output", str(tmp_path / "kept.json"), "--tracking.uri", "http://127.0.0.1:9"]
        expected = "http://127.0.0.1:9: MLflow logging failed"
    assert clipmodule(argv) == 2
    err = capsys.readouterr().err.strip()
    assert expected in err and "\n" not in err and "Traceback" not in err, err
    assert not (tmp_path / "out.json").exists() and not (tmp_path / "suite").exists()
    if case == "unreachable-mlflow":
        assert json.loads((tmp_path / "kept.json").read_text())["metrics"]["num_samples"] == 12


def test_zeroshot_reads_class_specific_prompts_from_json(work, tmp_path, capsys):
    from clipmodule.api import load
    from clipmodule.eval.readers import open_classification
    from clipmodule.eval.tasks import zeroshot_classification

    prompts = {"circle": ["a round shape", "a {c} drawn in colour"], "square": ["four equal sides"],
               "triangle": ["three corners", "a pointed shape", "a {}"]}
    (tmp_path / "cupl.json").write_text(json.dumps(prompts))
    output = tmp_path / "zs.json"
    assert clipmodule(["eval", "zeroshot", "--model", str(work / "tiny.safetensors"), "--dataset", str(work / "test"),
                       "--templates", str(tmp_path / "cupl.json"), "--output", str(output),
                       "--tracking.uri", "none"]) == 0, capsys.readouterr().err
    model, preprocess = load(work / "tiny.safetensors")
    dataset = open_classification(str(work / "test"), preprocess)
    direct = zeroshot_classification(model, dataset, dataset.classnames, prompts)
    assert json.loads(output.read_text())["metrics"] == pytest.approx(direct)
    (tmp_path / "cupl.json").write_text(json.dumps({"circle": ["a round shape"]}))
    assert clipmodule(["eval", "zeroshot", "--model", str(work / "tiny.safetensors"), "--dataset", str(work / "test"),
                       "--templates", str(tmp_path / "cupl.json"), "--tracking.uri", "none",
                       "--output", str(tmp_path / "missing.json")]) == 2
    assert "cupl.json: no prompts for class 'square'" in capsys.readouterr().err
    assert not (tmp_path / "missing.json").exists()


def test_unwritable_output_or_store_fails_before_the_model_is_loaded(work, tmp_path, capsys, monkeypatch):
    import importlib

    eval_cli = importlib.import_module("clipmodule.eval.cli")  # the module the dispatcher runs
    monkeypatch.setattr(eval_cli, "_load_model", lambda model: pytest.fail("evaluated before checking the output"))
    (tmp_path / "a-file").write_text("x")
    (tmp_path / "suite.yaml").write_text(yaml.safe_dump({"output": str(tmp_path / "a-file"), "tasks": [
        {"task": "retrieval", "dataset": str(work / "captions.csv")}]}))
    zeroshot = ["eval", "zeroshot", "--model", str(work / "tiny.safetensors"), "--dataset", str(work / "test")]
    cases = [
        ([*zeroshot, "--output", str(tmp_path / "a-file" / "out.json")], "a-file is a file, not a folder"),
        ([*zeroshot, "--output", str(tmp_path)], "--output is a folder; give a file name"),
        ([*zeroshot, "--templates", "simple", "--output", str(tmp_path / "z.json"), "--tracking.uri", "foo://x"],
         "foo://x: not a tracking URI MLflow reads"),
        (["eval", "suite", "-c", str(tmp_path / "suite.yaml"), "--model", str(work / "tiny.safetensors")],
         "a-file: --output is a file; give a folder"),
    ]
    classifiers_cli = importlib.import_module("clipmodule.classifiers.cli")
    monkeypatch.setattr(classifiers_cli, "test_classifier", lambda command: pytest.fail("tested before checking"))
    cases.append((["test", "--model", B32, "--checkpoint", "w.safetensors", "--data", str(work / "test"),
                   "--output", str(tmp_path / "a-file" / "t.json")], "a-file is a file, not a folder"))
    for argv, expected in cases:
        assert clipmodule(argv) == 2
        err = capsys.readouterr().err.strip()
        assert expected in err and "\n" not in err, err


def test_a_truncated_shard_is_skipped_and_counted_in_the_results(work, tmp_path, capsys, caplog):
    import io

    import webdataset as wds

    for shard in range(2):
        with wds.TarWriter(str(tmp_path / f"{shard:05d}.tar")) as sink:
            for index, path in enumerate(sorted((work / "test").glob("*/*.png"))[:4]):
                buffer = io.BytesIO()
                Image.open(path).save(buffer, format="PNG")
                label = ["circle", "square", "triangle"].index(path.parent.name)
                sink.write({"__key__": f"{shard}_{index}", "png": buffer.getvalue(), "cls": str(label).encode()})
    whole = (tmp_path / "00000.tar").read_bytes()
    (tmp_path / "00000.tar").write_bytes(whole[: whole.index(b"0_2.png") + 520])  # inside the 3rd sample's image
    (tmp_path / "names.txt").write_text("circle\nsquare\ntriangle\n")
    output = tmp_path / "zs.json"
    assert clipmodule(["eval", "zeroshot", "--model", str(work / "tiny.safetensors"), "--dataset", str(tmp_path),
                       "--classnames", str(tmp_path / "names.txt"), "--templates", "simple",
                       "--output", str(output), "--tracking.uri", "none"]) == 0, capsys.readouterr().err
    metrics = json.loads(output.read_text())["metrics"]
    assert metrics["num_samples"] == 2 + 4 and metrics["corrupt_shards"] == 1 and metrics["skipped_samples"] == 1
    assert "corrupt_shards" in capsys.readouterr().out and "00000.tar (truncated at member 0_2.png)" in caplog.text


@pytest.fixture(scope="module")
def biased_b32(work) -> Path:
    """ViT-B/32 classifier weights (fp16) whose head prefers class 1, then 0, then 2, whatever the image."""
    from safetensors.torch import save_file

    from clipmodule.classifiers.zoo import get_model

    model = get_model(B32)
    with torch.no_grad():
        model.head.bias[[1, 0, 2]] = torch.tensor([300.0, 200.0, 100.0])
    half = {key: value.half().contiguous() for key, value in model.state_dict().items()}
    save_file(half, str(work / "b32.safetensors"))
    return work / "b32.safetensors"


def test_classifier_test_command_reports_top1_top5(work, biased_b32, capsys):
    from skimage import data

    for name in ["astronaut", "chelsea", "coffee", "rocket", "camera", "moon"]:
        Image.fromarray(getattr(data, name)()).save(work / f"{name}.png")
    lines = ["path,label", "astronaut.png,0", "chelsea.png,0", "coffee.png,1", "rocket.png,goldfish",
             "camera.png,2", "moon.png,great white shark"]
    (work / "val.csv").write_text("\n".join(lines) + "\n")
    config = REPO / "experiments" / "classifiers" / "vit-base-p32_pt-64xb64_in1k.yaml"
    output = work / "test.json"
    code = clipmodule(["test", "-c", str(config), "--checkpoint", str(biased_b32), "--data", str(work / "val.csv"),
                       "--loader.batch_size", "6", "--output", str(output), *_tracking(work)])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "accuracy/top1: 33.3333  accuracy/top5: 100.0000  (6 images)" in out.out  # only class 1 is ever top-1
    record = json.loads(output.read_text())
    assert record["metrics"]["top1"] == pytest.approx(1 / 3) and record["model"] == B32
    assert _run(work, record["mlflow_run_id"]).data.metrics["accuracy/top1"] == pytest.approx(1 / 3)


def test_get_model_and_inference_model_on_a_named_classifier(work, biased_b32):
    import clipmodule

    model = clipmodule.get_model(B32, pretrained=biased_b32)
    result = clipmodule.inference_model(model, str(work / "chelsea.png"), device="cpu")
    assert (result["pred_label"], result["pred_class"]) == (1, "goldfish") and result["pred_scores"].shape == (1000,)
    assert result["pred_score"] == pytest.approx(1.0) and result["pred_scores"].sum() == pytest.approx(1.0, abs=1e-4)
    by_name = clipmodule.inference_model(B32, [str(work / "moon.png"), str(work / "coffee.png")], pretrained=biased_b32,
                                         device="cpu")
    assert [r["pred_class"] for r in by_name] == ["goldfish", "goldfish"]
    features = model.extract_feat(torch.rand(1, 3, 224, 224))
    assert isinstance(features, tuple) and features[0].shape == (1, 768)
    assert model(torch.rand(1, 3, 224, 224)).shape == (1, 1000)


def test_mismatched_classifier_checkpoint_exits_2(work, capsys):
    config = REPO / "experiments" / "classifiers" / "vit-base-p16_pt-64xb64_in1k.yaml"
    code = clipmodule(["test", "-c", str(config), "--checkpoint", str(work / "tiny.safetensors"),
                       "--data", str(work / "test"), "--tracking.uri", "none"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "tiny.safetensors: weights do not fit this architecture" in err and "\n" not in err


def test_shipped_configs_parse():
    from clipmodule.classifiers.cli import _parse
    from clipmodule.classifiers.zoo import CLASSIFIER_SPECS
    from clipmodule.eval.cli import parse_command

    configs = sorted((REPO / "experiments" / "classifiers").glob("*.yaml"))
    assert len(configs) == 5
    for config in configs:
        command = _parse(["-c", str(config), "--checkpoint", "w.pth", "--data", "val"])
        spec = CLASSIFIER_SPECS[command.model]
        assert f"p{spec.patch_size}_" in config.name
        assert (f"-{spec.image_size}px" in config.name) == (spec.image_size != 224)
    suite = parse_command("suite", ["-c", str(REPO / "experiments" / "benchmarks" / "builtin.yaml"), "--model", "m"])
    assert len(suite.tasks) == 5 and suite.name == "builtin"
    from clipmodule.eval.tasks import kind_of

    for task in suite.tasks:
        kind_of(task)
