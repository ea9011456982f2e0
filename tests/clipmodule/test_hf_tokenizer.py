"""SigLIP-style tokenizers: a sentencepiece vocabulary the test builds, saved as tokenizer.json, read by
`tokenizers` here and by transformers in open_clip: the same ids."""

import json

import open_clip
import pytest
import torch

import clipmodule
from clipmodule.errors import ClipModuleError
from clipmodule.hf_tokenizer import HFTokenizer
from tests.clipmodule.spm import make_spm_tokenizer

spm = pytest.importorskip("sentencepiece")
CORPUS = ["a photo of a cat", "a photo of a dog sitting on a red sofa", "a diagram of the model",
          "the quick brown fox jumps over the lazy dog", "zebra crossing at the café"]


@pytest.fixture(scope="module")
def tokenizer_folder(tmp_path_factory):
    return make_spm_tokenizer(tmp_path_factory.mktemp("spm"), CORPUS)


@pytest.mark.parametrize("clean", ["canonicalize", "lower", "whitespace"])
def test_ids_equal_open_clip_hf_tokenizer(tokenizer_folder, clean):
    texts = ["A photo of a CAT!", "the quick brown fox jumps over the lazy dog, " * 3, "Zebra_crossing &amp; café",
             "  spaced\tout  "]
    theirs = open_clip.tokenizer.HFTokenizer(str(tokenizer_folder), context_length=32, clean=clean)
    ours = HFTokenizer(tokenizer_folder, 32, clean=clean)
    ids = ours(texts)
    assert torch.equal(ids, theirs(texts))
    assert ids[1, -1] == 1 and ids[0, -1] == 0  # truncated rows keep </s>; short rows are padded
    assert torch.equal(ours(texts, context_length=12), theirs(texts, context_length=12))


def test_bad_input_is_one_line(tokenizer_folder, tmp_path):
    with pytest.raises(ClipModuleError, match="no tokenizer.json"):
        HFTokenizer(tmp_path, 16)
    with pytest.raises(ClipModuleError, match="clean mode 'shout'"):
        HFTokenizer(tokenizer_folder, 16, clean="shout")
    with pytest.raises(ClipModuleError, match="list of str"):
        HFTokenizer(tokenizer_folder, 16)([None])


def test_get_tokenizer_finds_the_tokenizer_beside_the_weights(tokenizer_folder, tmp_path):
    model = clipmodule.create_model("tiny-vit", context_length=16,
                                    text={"tokenizer": "hf:test/spm", "tokenizer_clean": "canonicalize"})
    with pytest.raises(ClipModuleError, match="no tokenizer.json came with its weights"):
        clipmodule.get_tokenizer(model)
    clipmodule.save_checkpoint(model, tmp_path / "hub", format="open_clip")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (tmp_path / "hub" / name).write_bytes((tokenizer_folder / name).read_bytes())
    assert json.loads((tmp_path / "hub" / "open_clip_config.json").read_text())["model_cfg"]["text_cfg"][
        "tokenizer_kwargs"] == {"clean": "canonicalize"}
    loaded, _ = clipmodule.load(tmp_path / "hub")
    ids = clipmodule.get_tokenizer(loaded)(["a photo of a cat"])
    assert ids.shape == (1, 16)
    assert torch.equal(ids, open_clip.tokenizer.HFTokenizer(str(tokenizer_folder), 16, clean="canonicalize")(
        ["a photo of a cat"]))
    assert clipmodule.get_tokenizer(clipmodule.create_model("tiny-vit", context_length=24))("a cat").shape == (1, 24)


def test_an_hf_name_is_a_local_folder_only_when_written_as_a_path(tokenizer_folder, tmp_path, monkeypatch):
    """A stray test/spm folder in the working directory does not shadow the repo name; ./test/spm is that folder,
    kept as an absolute path (another working directory later reads the same one)."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "test" / "spm").mkdir(parents=True)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (tmp_path / "test" / "spm" / name).write_bytes((tokenizer_folder / name).read_bytes())
    repo_named = clipmodule.create_model("tiny-vit", context_length=16, text={"tokenizer": "hf:test/spm"})
    assert clipmodule.tokenizer_spec(repo_named).folder is None
    for written in ("./test/spm", str(tmp_path / "test" / "spm")):
        model = clipmodule.create_model("tiny-vit", context_length=16, text={"tokenizer": f"hf:{written}"})
        assert clipmodule.tokenizer_spec(model).folder == str((tmp_path / "test" / "spm").resolve())
        assert clipmodule.get_tokenizer(model)(["a photo of a cat"]).shape == (1, 16)
