"""open_clip's pretrained tags resolve to the local Hugging Face cache (a fake one, written here in huggingface_hub's
layout), never downloading: `load(name, pretrained=TAG)`, `create_model_and_transforms`, `init_from: {name,
pretrained}` and `clipmodule models --pretrained`."""

import json
import os

import open_clip
import open_clip.pretrained as open_clip_pretrained
import pytest
import safetensors.torch
import torch

import clipmodule
from clipmodule.checkpoints import pretrained
from clipmodule.checkpoints.cli import list_models
from clipmodule.errors import ClipModuleError
from clipmodule.models import available_models, create_model
from clipmodule.train.init import start_from_weights

LICENCES = {"MIT", "apache-2.0", "cc-by-nc-4.0", "apple-amlr"}
TINY_ROW = {"name": "tiny-vit", "tag": "demo_s1k", "repo": "someone/tiny-vit-demo", "file": None,
            "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "interpolation": "bilinear", "resize_mode": "squash",
            "quick_gelu": False, "licence": "MIT"}


def _cache_repo(cache, repo, files, revision="c0ffee"):
    """`models--org--name` as huggingface_hub writes it: blobs, a snapshot of symlinks, refs/main."""
    root = cache / ("models--" + repo.replace("/", "--"))
    snapshot = root / "snapshots" / revision
    snapshot.mkdir(parents=True)
    (root / "blobs").mkdir()
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text(revision)
    for name, write in files.items():
        blob = root / "blobs" / f"blob-{name}"
        write(blob)
        os.symlink(os.path.relpath(blob, snapshot), snapshot / name)
    (root / "snapshots" / "0ld").mkdir()  # an older revision: refs/main decides
    return snapshot


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    return tmp_path / "hub"


@pytest.fixture
def tiny_tag(tmp_path, cache, monkeypatch):
    """The real table plus one tiny release, cached: (the released model, the table row)."""
    table = tmp_path / "table.json"
    table.write_text(json.dumps([*json.loads(pretrained.PRETRAINED_FILE.read_text()), TINY_ROW]))
    monkeypatch.setattr(pretrained, "PRETRAINED_FILE", table)
    torch.manual_seed(0)
    released = create_model("tiny-vit").eval()
    _cache_repo(cache, TINY_ROW["repo"], {
        "open_clip_model.safetensors": lambda path: safetensors.torch.save_file(released.state_dict(), str(path))})
    return released


def test_table_is_open_clips_with_a_licence_each():
    rows = pretrained.pretrained_tags()
    assert [(row.name, row.tag) for row in rows] == open_clip_pretrained.list_pretrained()
    names = set(available_models())
    for row in rows:
        theirs = open_clip_pretrained.get_pretrained_cfg(row.name, row.tag)
        assert theirs["hf_hub"] == f"{row.repo}/{row.file or ''}"
        assert row.mean == tuple(theirs["mean"]) and row.quick_gelu == theirs.get("quick_gelu", False)
        assert row.licence in LICENCES and row.name in names


def test_load_by_tag_reads_the_cache_with_the_tags_preprocessing(tiny_tag):
    model, preprocess = clipmodule.load("tiny-vit", pretrained="Demo-S1K")  # open_clip's spelling rule
    assert all(torch.equal(model.state_dict()[key], value) for key, value in tiny_tag.state_dict().items())
    assert preprocess.transforms[-1].mean == (0.5, 0.5, 0.5) and model.pretrained["licence"] == "MIT"
    network, train, evaluation = clipmodule.create_model_and_transforms("tiny-vit", pretrained="demo_s1k")
    assert not network.training and evaluation.transforms[-1].std == (0.25, 0.25, 0.25)
    assert train.transforms[0].size == (32, 32) and train.transforms[-1].mean == (0.5, 0.5, 0.5)
    with pytest.raises(ClipModuleError, match="model='tiny-rn' cannot also be given"):
        clipmodule.load("tiny-vit", pretrained="demo_s1k", model="tiny-rn")
    with pytest.raises(ClipModuleError, match="takes no architecture overrides"):
        clipmodule.create_model_and_transforms("tiny-vit", pretrained="demo_s1k", image_size=64)


def test_init_from_name_and_pretrained(tiny_tag):
    network, record = start_from_weights({"name": "tiny-vit", "pretrained": "demo_s1k"})
    assert network.training and record["pretrained"] == "demo_s1k" and record["repo"] == TINY_ROW["repo"]
    assert all(torch.equal(network.state_dict()[key], value) for key, value in tiny_tag.state_dict().items())
    from clipmodule.models import create_model

    configured, configured_record = start_from_weights({"name": "tiny-vit", "pretrained": "demo_s1k"},
                                                       configured=create_model("tiny-vit"))  # and model.model
    assert configured_record["pretrained"] == "demo_s1k"
    assert all(torch.equal(configured.state_dict()[key], value) for key, value in tiny_tag.state_dict().items())
    with pytest.raises(ClipModuleError, match=r"must be \{name: MODEL, pretrained: TAG\}"):
        start_from_weights({"name": "tiny-vit"})


def test_missing_tag_is_one_line_naming_the_repo_and_where_it_goes(cache):
    with pytest.raises(ClipModuleError) as info:
        clipmodule.load("ViT-B-32", pretrained="laion2b_s34b_b79k")
    message = str(info.value)
    assert "\n" not in message and "laion/CLIP-ViT-B-32-laion2B-s34B-b79K" in message
    assert str(cache / "models--laion--CLIP-ViT-B-32-laion2B-s34B-b79K") in message
    with pytest.raises(ClipModuleError, match="has no pretrained tag 'laion9b'; its tags: openai, "):
        clipmodule.load("ViT-B-32", pretrained="laion9b")
    with pytest.raises(ClipModuleError, match="'tiny-rn' has no pretrained tags"):
        clipmodule.load("tiny-rn", pretrained="openai")


def test_real_tags_resolve_safetensors_first(cache):
    snapshot = _cache_repo(cache, "timm/vit_base_patch32_clip_224.openai",
                           {"open_clip_pytorch_model.bin": lambda path: path.write_bytes(b"x")})
    path, row = pretrained.resolve("ViT-B-32", "openai")
    assert path == snapshot / "open_clip_pytorch_model.bin" and row.quick_gelu  # OpenAI's: QuickGELU
    os.symlink(snapshot / "open_clip_pytorch_model.bin", snapshot / "open_clip_model.safetensors")
    assert pretrained.resolve("ViT-B-32", "openai")[0].name == "open_clip_model.safetensors"
    _cache_repo(cache, "jienengchen/ViTamin-S", {"pytorch_model.bin": lambda path: path.write_bytes(b"x")})
    assert pretrained.resolve("ViTamin-S", "datacomp1b")[0].name == "pytorch_model.bin"  # the table's own file


def test_models_command_lists_tags_and_what_is_local(tiny_tag, capsys):
    assert list_models(["--pretrained"]) == 0
    lines = capsys.readouterr().out.splitlines()
    row = next(line for line in lines if "demo_s1k" in line)
    assert "someone/tiny-vit-demo" in row and "open_clip_model.safetensors" in row and "MIT" in row
    assert sum("laion2b_s34b_b79k" in line and " - " in line for line in lines) == 1
    assert open_clip.list_pretrained()  # the peer's own table is what the data file was generated from


def test_hf_tokenizer_is_found_in_the_cache_by_its_repo(cache, tmp_path):
    import transformers

    trained = transformers.T5Tokenizer().train_new_from_iterator(["a photo of a cat", "a dog"] * 20, vocab_size=60)
    trained.save_pretrained(tmp_path / "tok")
    _cache_repo(cache, "google/mt5-base", {name: lambda path, name=name: path.write_bytes(
        (tmp_path / "tok" / name).read_bytes()) for name in ("tokenizer.json", "tokenizer_config.json")})
    model = create_model("tiny-vit", context_length=12, text={"tokenizer": "hf:google/mt5-base"})
    theirs = open_clip.tokenizer.HFTokenizer(str(tmp_path / "tok"), context_length=12)
    assert torch.equal(clipmodule.get_tokenizer(model)(["a photo of a cat"]), theirs(["a photo of a cat"]))


def test_a_tag_gives_what_open_clip_loads_from_the_same_cache(tmp_path, cache, monkeypatch):
    """open_clip's own tag loading (offline, from the same fake cache) and ours: same model, same preprocessing."""
    import huggingface_hub.constants
    import open_clip.factory
    from PIL import Image

    from clipmodule.models import MODEL_CONFIGS
    from clipmodule.models.open_clip_config import config_from_open_clip

    config = {"embed_dim": 32, "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 8},
              "text_cfg": {"context_length": 16, "vocab_size": 100, "width": 64, "heads": 1, "layers": 1}}
    row = {**TINY_ROW, "name": "tiny-oc", "quick_gelu": True, "interpolation": "bicubic", "resize_mode": "shortest"}
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setitem(open_clip.factory._MODEL_CONFIGS, "tiny-oc", config)
    monkeypatch.setitem(open_clip_pretrained._PRETRAINED, "tiny-oc", {"demo_s1k": open_clip_pretrained._pcfg(
        hf_hub=f"{row['repo']}/", mean=(0.5,) * 3, std=(0.25,) * 3, quick_gelu=True)})
    monkeypatch.setitem(MODEL_CONFIGS, "tiny-oc", config_from_open_clip(config, "tiny-oc"))
    (tmp_path / "table.json").write_text(json.dumps([row]))
    monkeypatch.setattr(pretrained, "PRETRAINED_FILE", tmp_path / "table.json")
    torch.manual_seed(0)
    released = open_clip.CLIP(**config)
    with torch.no_grad():
        for parameter in released.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.02)
    _cache_repo(cache, row["repo"], {
        "open_clip_model.safetensors": lambda path: safetensors.torch.save_file(released.state_dict(), str(path))})
    with pytest.warns(UserWarning, match="QuickGELU mismatch"):  # open_clip builds the name's GELU and warns
        open_clip.create_model_and_transforms("tiny-oc", pretrained="demo_s1k", cache_dir=str(cache))
    theirs, _, their_preprocess = open_clip.create_model_and_transforms(
        "tiny-oc", pretrained="demo_s1k", cache_dir=str(cache), force_quick_gelu=True)
    ours, our_preprocess = clipmodule.load("tiny-oc", pretrained="demo_s1k")
    assert ours.config.quick_gelu  # the activation the tag was trained with, never a silently different model
    image = Image.new("RGB", (50, 40), (200, 30, 90))
    images, text = our_preprocess(image)[None], torch.randint(1, 99, (2, 16))
    text[:, 5] = 99
    assert torch.allclose(images, their_preprocess(image)[None], atol=1e-6)
    with torch.no_grad():
        assert (ours.encode_image(images) - theirs.encode_image(images)).abs().max() <= 1e-5
        assert (ours.encode_text(text) - theirs.encode_text(text)).abs().max() <= 1e-5
