"""Conversion against the peers: open_clip and HF models with random weights give the same outputs here."""

import json
import os
import pickle

import open_clip
import pytest
import torch
from transformers import CLIPConfig as HFCLIPConfig
from transformers import CLIPModel

from clipmodule.checkpoints.infer import infer_shapes
from clipmodule.checkpoints.io import load_checkpoint, save_checkpoint
from clipmodule.checkpoints.readers import read_checkpoint
from clipmodule.errors import ClipModuleError
from clipmodule.models import CLIP, create_model

TOL = 1e-5


def _inputs(image_size, seed=0):
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(2, 3, image_size, image_size, generator=generator)
    text = open_clip.tokenize(["a diagram", "a photo of a dog sitting on a red sofa, next to a cat"])
    return images, text


def _assert_same_outputs(theirs_image, theirs_text, theirs_logits, ours, images, text):
    with torch.no_grad():
        assert (ours.encode_image(images) - theirs_image).abs().max() <= TOL
        assert (ours.encode_text(text) - theirs_text).abs().max() <= TOL
        assert (ours(images, text)[0] - theirs_logits).abs().max() <= TOL * 100  # logits are x100


SMALL = {"embed_dim": 64, "quick_gelu": True, "vision_cfg": {"layers": 2, "width": 128, "patch_size": 8,
                                                              "image_size": 32},
         "text_cfg": {"width": 128, "heads": 2, "layers": 2}}


def _open_clip_model(name):
    torch.manual_seed(0)
    if name == "small":
        return open_clip.CLIP(**SMALL).eval()
    return open_clip.create_model(f"{name}-quickgelu", pretrained=None).eval()


@pytest.mark.parametrize("name", ["ViT-B-32", "RN50", "small"])
def test_open_clip_weights_give_open_clip_outputs(name, tmp_path):
    theirs = _open_clip_model(name)
    torch.save(theirs.state_dict(), tmp_path / "open_clip.pt")
    # OpenAI's shapes (ViT-B-32, RN50) load as OpenAI's models; others need their config (here open_clip's JSON).
    (tmp_path / "small.json").write_text(json.dumps(SMALL))
    model = str(tmp_path / "small.json") if name == "small" else None
    ours = load_checkpoint(tmp_path / "open_clip.pt", model=model).eval()
    images, text = _inputs(ours.config.vision.image_size)
    with torch.no_grad():
        expected = theirs.encode_image(images), theirs.encode_text(text), theirs(images, text)[0]
    logits = theirs.logit_scale.exp() * torch.nn.functional.normalize(expected[0], dim=-1) @ \
        torch.nn.functional.normalize(expected[1], dim=-1).t()
    _assert_same_outputs(expected[0], expected[1], logits.detach(), ours, images, text)
    # Round trip: ours -> open_clip layout -> a fresh open_clip model gives the same outputs again.
    save_checkpoint(ours, tmp_path / "back.safetensors", format="open_clip")
    state_dict, _ = read_checkpoint(tmp_path / "back.safetensors")
    again = _open_clip_model(name)
    again.load_state_dict(state_dict, strict=True)
    with torch.no_grad():
        assert (again.encode_image(images) - expected[0]).abs().max() <= TOL


def _hf_model():
    torch.manual_seed(0)
    config = HFCLIPConfig(  # ViT-B/32 sized, built from a config: nothing is downloaded
        text_config=dict(hidden_size=512, intermediate_size=2048, num_attention_heads=8, num_hidden_layers=12),
        vision_config=dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12,
                           image_size=224, patch_size=32),
        projection_dim=512,
    )
    return CLIPModel(config).eval()


def test_hf_model_both_directions(tmp_path):
    hf = _hf_model()
    hf.save_pretrained(tmp_path / "hf")
    ours = load_checkpoint(tmp_path / "hf").eval()
    assert ours.config.vision.layers == 12 and ours.config.vision.patch_size == 32 and ours.config.quick_gelu
    images, text = _inputs(224)
    with torch.no_grad():
        out = hf(input_ids=text, pixel_values=images)
        image_features = hf.get_image_features(pixel_values=images)
        text_features = hf.get_text_features(input_ids=text)
    image_features = getattr(image_features, "pooler_output", image_features)
    text_features = getattr(text_features, "pooler_output", text_features)
    _assert_same_outputs(image_features, text_features, out.logits_per_image, ours, images, text)
    # Export ours as an HF folder; transformers reads it and gives the same logits.
    save_checkpoint(ours, tmp_path / "exported", format="hf")
    reloaded = CLIPModel.from_pretrained(tmp_path / "exported").eval()
    with torch.no_grad():
        logits = reloaded(input_ids=text, pixel_values=images).logits_per_image
        assert (logits - out.logits_per_image).abs().max() <= 1e-3


def test_our_safetensors_keep_the_config(tmp_path):
    model = create_model("tiny-rn", quick_gelu=False)
    save_checkpoint(model, tmp_path / "m.safetensors")
    state_dict, info = read_checkpoint(tmp_path / "m.safetensors")
    assert info["config"] == model.config
    assert load_checkpoint(tmp_path / "m.safetensors").config == model.config
    assert infer_shapes(state_dict).vision == model.config.vision  # the shapes give the tower back too


def test_wrong_architecture_is_one_line_error(tmp_path):
    save_checkpoint(create_model("tiny-vit"), tmp_path / "vit.pt")
    with pytest.raises(ClipModuleError, match="weights do not fit this architecture") as info:
        load_checkpoint(tmp_path / "vit.pt", expected=create_model("tiny-rn").config)
    assert "\n" not in str(info.value)


def test_truncated_file_is_one_line_error(tmp_path):
    save_checkpoint(create_model("tiny-vit"), tmp_path / "full.pt")
    data = (tmp_path / "full.pt").read_bytes()
    for suffix in (".pt", ".safetensors"):
        if suffix == ".safetensors":
            save_checkpoint(create_model("tiny-vit"), tmp_path / "full.safetensors")
            data = (tmp_path / "full.safetensors").read_bytes()
        (tmp_path / f"cut{suffix}").write_bytes(data[: len(data) // 2])
        with pytest.raises(ClipModuleError, match="truncated|unreadable"):
            load_checkpoint(tmp_path / f"cut{suffix}")


class _Exploit:
    def __reduce__(self):
        return (print, ("this code must never run",))


def test_pickle_with_code_is_refused(tmp_path, capsys):
    torch.save({"state_dict": {"w": torch.zeros(1)}, "payload": _Exploit()}, tmp_path / "evil.pt")
    with pytest.raises(ClipModuleError, match="refusing to unpickle"):
        load_checkpoint(tmp_path / "evil.pt")
    assert "must never run" not in capsys.readouterr().out
    with open(tmp_path / "plain.pkl", "wb") as handle:
        pickle.dump(_Exploit(), handle)
    with pytest.raises(ClipModuleError):
        load_checkpoint(tmp_path / "plain.pkl")
    assert "must never run" not in capsys.readouterr().out


def test_not_a_clip_checkpoint(tmp_path):
    torch.save({"weight": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(ClipModuleError, match="not a CLIP checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


def test_resnet_cannot_be_exported_to_hf(tmp_path):
    with pytest.raises(ClipModuleError, match="no ModifiedResNet"):
        save_checkpoint(create_model("tiny-rn"), tmp_path / "hf", format="hf")
    assert isinstance(create_model("tiny-rn"), CLIP)


def test_fit_checkpoint_loads_with_the_config_it_records(tmp_path):
    torch.manual_seed(0)
    model = create_model("tiny-vit", context_length=24, quick_gelu=False)  # the demo's kind: nothing registered
    state_dict = {f"model.{key}": value for key, value in model.state_dict().items()}
    torch.save({"state_dict": state_dict, "global_step": 3, "hyper_parameters": {"network": model.config.to_dict()}},
               tmp_path / "last.ckpt")
    loaded = load_checkpoint(tmp_path / "last.ckpt")
    assert loaded.config == model.config and torch.equal(loaded.visual.proj, model.visual.proj)


def test_layer_scale_model_cannot_be_exported_to_hf(tmp_path):
    with pytest.raises(ClipModuleError, match="no LayerScale"):
        save_checkpoint(create_model("tiny-vit", vision={"ls_init_value": 0.1}), tmp_path / "hf", format="hf")
    assert not (tmp_path / "hf").exists()


def test_folder_is_swapped_in_whole_and_keeps_other_files(tmp_path, monkeypatch):
    import clipmodule.checkpoints.io as io

    first, second = create_model("tiny-vit"), create_model("tiny-vit", quick_gelu=False)
    save_checkpoint(first, tmp_path / "hf", format="hf")
    (tmp_path / "hf" / "tokenizer.json").write_text("{}")
    before = (tmp_path / "hf" / "config.json").read_text()

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # the process dies after config.json, before the weights

    monkeypatch.setattr(io, "openai_to_hf", killed)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(second, tmp_path / "hf", format="hf")
    assert (tmp_path / "hf" / "config.json").read_text() == before  # old config beside old weights
    assert load_checkpoint(tmp_path / "hf").config.quick_gelu is True
    monkeypatch.undo()
    save_checkpoint(second, tmp_path / "hf", format="hf")
    assert load_checkpoint(tmp_path / "hf").config.quick_gelu is False
    assert (tmp_path / "hf" / "tokenizer.json").read_text() == "{}"
    assert [path.name for path in tmp_path.iterdir()] == ["hf"]  # no staging folder left behind


def test_gelu_model_is_not_written_in_openai_layout(tmp_path, capsys):
    from clipmodule.cli import main

    gelu = create_model("tiny-vit", quick_gelu=False)
    for path, fmt in ((tmp_path / "gelu.pt", "openai"), (tmp_path / "gelu.bin", "openai")):
        with pytest.raises(ClipModuleError, match="exact GELU, which OpenAI's layout cannot say") as info:
            save_checkpoint(gelu, path, format=fmt)
        assert "\n" not in str(info.value) and ".safetensors" in str(info.value) and "open_clip" in str(info.value)
        assert not path.exists()
    save_checkpoint(gelu, tmp_path / "gelu.safetensors")  # the file records the activation: read back as GELU
    assert load_checkpoint(tmp_path / "gelu.safetensors").config.quick_gelu is False
    with torch.device("meta"):  # shapes only: ViT-B-32 and RN50 cost no memory
        b32, rn50 = create_model("ViT-B-32"), create_model("RN50")
    with pytest.raises(ClipModuleError, match=r"its -quickgelu twin ViT-B-32-quickgelu"):
        save_checkpoint(b32, tmp_path / "b32.pt")
    with pytest.raises(ClipModuleError, match=r"RN50 uses exact GELU.*twin RN50-quickgelu") as info:
        save_checkpoint(rn50, tmp_path / "rn50.pt")
    assert "--to hf" not in str(info.value)  # HF has no ResNet tower
    # the CLI refuses before writing anything; a QuickGELU model still exports and round-trips
    assert main(["convert", str(tmp_path / "gelu.safetensors"), str(tmp_path / "out.pt"), "--to", "openai"]) == 2
    assert "exact GELU" in capsys.readouterr().err and not (tmp_path / "out.pt").exists()
    torch.manual_seed(0)
    quick = create_model("tiny-vit", quick_gelu=True)
    save_checkpoint(quick, tmp_path / "quick.pt")
    back = load_checkpoint(tmp_path / "quick.pt", model="tiny-vit")
    assert back.config.quick_gelu and torch.equal(back.visual.proj, quick.visual.proj)


def _disk_full_after(data_bytes: int):
    """A writer that puts part of the data down, then fails as a full disk does."""
    import errno

    def write(_, path, *args, **kwargs):
        with open(path, "wb") as handle:
            handle.write(b"\0" * data_bytes)
        raise OSError(errno.ENOSPC, "No space left on device")

    return write


def test_full_disk_is_one_line_and_leaves_nothing_partial(tmp_path, monkeypatch, capsys):
    import safetensors.torch

    from clipmodule.cli import main

    torch.manual_seed(0)
    model = create_model("tiny-vit")
    source = save_checkpoint(model, tmp_path / "source.safetensors")
    for target, fmt in (("model.pt", "openai"), ("model.safetensors", "open_clip"), ("hub", "open_clip"),
                        ("hf", "hf")):
        save_checkpoint(create_model("tiny-vit"), tmp_path / target, format=fmt)  # an earlier good one
        before = sorted(path.name for path in tmp_path.iterdir())
        earlier = load_checkpoint(tmp_path / target, model="tiny-vit").visual.proj.clone()
        with monkeypatch.context() as patch:
            patch.setattr(torch, "save", _disk_full_after(100))
            patch.setattr(safetensors.torch, "save_file", _disk_full_after(100))
            with pytest.raises(ClipModuleError, match="cannot write the checkpoint .No space left on device.") as info:
                save_checkpoint(model, tmp_path / target, format=fmt)
            assert str(info.value).startswith(f"{tmp_path / target}: ") and "\n" not in str(info.value)
            capsys.readouterr()
            assert main(["convert", str(source), str(tmp_path / target), "--to", fmt]) == 2
            assert capsys.readouterr().err.count("No space left on device") == 1
        assert sorted(path.name for path in tmp_path.iterdir()) == before  # no hidden temporaries or staging
        assert torch.equal(load_checkpoint(tmp_path / target, model="tiny-vit").visual.proj, earlier)  # intact


def test_killed_writes_are_cleared_at_the_next_write(tmp_path):
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    live = str(os.getppid())
    model = create_model("tiny-vit")
    (tmp_path / f".model.pt.tmp-{dead}").write_bytes(b"half a checkpoint")
    (tmp_path / f".model.pt.tmp-{live}").write_bytes(b"a live writer's")
    save_checkpoint(model, tmp_path / "model.pt")
    assert sorted(path.name for path in tmp_path.iterdir()) == [f".model.pt.tmp-{live}", "model.pt"]
    # a folder write killed between its two renames: the old folder is put back, the staging folder goes
    save_checkpoint(model, tmp_path / "hub", format="open_clip")
    (tmp_path / "hub").replace(tmp_path / f".hub.old-{dead}")
    (tmp_path / f".hub.tmp-{dead}").mkdir()
    (tmp_path / f".hub.tmp-{dead}" / "open_clip_config.json").write_text("{")
    save_checkpoint(model, tmp_path / "hub.safetensors", format="open_clip")  # another target: left alone
    assert (tmp_path / f".hub.old-{dead}").is_dir()
    save_checkpoint(model, tmp_path / "hub", format="open_clip")
    assert sorted(path.name for path in tmp_path.iterdir()) == [f".model.pt.tmp-{live}", "hub", "hub.safetensors",
                                                                "model.pt"]
