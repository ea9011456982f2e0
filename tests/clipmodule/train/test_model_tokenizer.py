"""fit and eval tokenise with the tokenizer the model reads: a SigLIP-style model (sentencepiece tokenizer.json,
a 64-token vocabulary) trains and evaluates through the commands; OpenAI's BPE ids (up to 49407) would not even
index its embedding table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from clipmodule.api import tokenizer_spec
from clipmodule.checkpoints.io import save_checkpoint
from clipmodule.cli import main
from clipmodule.data.datamodule import ShardDataModule
from clipmodule.data.synthetic import CAPTIONS, CLASSNAMES, write_synthetic_shards
from clipmodule.hf_tokenizer import HFTokenizer
from clipmodule.models import create_model
from tests.clipmodule.spm import make_spm_tokenizer

pytest.importorskip("sentencepiece")
pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

REPO = Path(__file__).resolve().parents[3]
TINY = ["-c", str(REPO / "experiments" / "base.yaml"), "-c", str(REPO / "experiments" / "tiny_cpu.yaml")]
TEXT = {"tokenizer": "hf:test/spm", "tokenizer_clean": "canonicalize", "vocab_size": 64, "pool": "last",
        "causal": False, "context_length": 16}


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("model_tokenizer")
    corpus = [template.format(name) for template in CAPTIONS for name in CLASSNAMES]
    make_spm_tokenizer(root / "spm", corpus + ["a photo of a {}."], vocab_size=60)
    write_synthetic_shards(root / "shards", 2, 32, image_size=32)
    return root


def _overrides() -> str:
    return json.dumps({"text": TEXT})


def test_the_loader_tokenises_with_the_models_tokenizer_json(work):
    model = create_model("tiny-vit", text=TEXT)
    spec = tokenizer_spec(model, folder=work / "spm" / "tok")
    data = ShardDataModule(str(work / "shards"), batch_size=8, num_workers=0, image_size=32, tokenizer=spec)
    batch = next(iter(data.train_dataloader()))
    captions = [sample["text"] for sample in _first_samples(data, 8)]
    expected = HFTokenizer(work / "spm" / "tok", 16, clean="canonicalize")(captions)
    assert torch.equal(batch["text"], expected) and int(batch["text"].max()) < 64


def _first_samples(data: ShardDataModule, count: int) -> list[dict]:
    dataset = data.train_dataset()
    return [sample for _, sample in zip(range(count), iter(dataset))]


def test_fit_and_eval_a_model_with_its_own_tokenizer(work, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    common = [*TINY, "--model.model.init_args.overrides", _overrides(), "--data.train_shards", str(work / "shards"),
              "--data.num_workers", "0", "--data.batch_size", "16", "--trainer.max_steps", "2",
              "--trainer.logger.init_args.tracking_uri", f"sqlite:///{tmp_path / 'mlruns.db'}",
              "--trainer.val_check_interval", "2",
              "--data.zeroshot_shards", str(work / "shards"), "--data.zeroshot_classnames",
              yaml.safe_dump(CLASSNAMES, default_flow_style=True).strip()]
    capsys.readouterr()
    assert main(["fit", *common]) == 2
    assert "data.tokenizer_folder" in capsys.readouterr().err  # no tokenizer.json: refused, not BPE ids
    assert main(["fit", *common, "--data.tokenizer_folder", str(work / "spm" / "tok")]) == 0

    model = create_model("tiny-vit", text=TEXT)
    folder = tmp_path / "exported"
    folder.mkdir()
    save_checkpoint(model, folder / "model.safetensors")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (folder / name).write_bytes((work / "spm" / "tok" / name).read_bytes())
    images = tmp_path / "images"
    from clipmodule.eval.readers.builtin import SHAPE_CLASSES, render_shapes

    shapes, labels, _ = render_shapes(per_class=2)
    for index, (image, label) in enumerate(zip(shapes, labels)):
        (images / SHAPE_CLASSES[label]).mkdir(parents=True, exist_ok=True)
        image.save(images / SHAPE_CLASSES[label] / f"{index}.png")
    out = tmp_path / "zeroshot.json"
    assert main(["eval", "zeroshot", "--model", str(folder / "model.safetensors"), "--dataset", str(images),
                 "--tracking.uri", "none", "--output", str(out)]) == 0
    assert 0.0 <= json.loads(out.read_text())["metrics"]["top1"] <= 1.0

    (checkpoint,) = tmp_path.glob("**/last.ckpt")  # the fit's own checkpoint: no tokenizer.json beside it
    zeroshot = ["eval", "zeroshot", "--model", str(checkpoint), "--dataset", str(images), "--tracking.uri", "none",
                "--output", str(tmp_path / "ckpt.json")]
    capsys.readouterr()
    assert main(zeroshot) == 2 and "--tokenizer_folder" in capsys.readouterr().err
    assert main([*zeroshot, "--tokenizer_folder", str(work / "spm" / "tok")]) == 0
