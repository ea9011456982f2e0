"""open_clip's whole zoo: every one of its 144 model configs is registered by name, and each loads from an open_clip
hub folder with open_clip's outputs on the same random weights.

Towers are cut down so each case takes a fraction of a second: our towers (ViT, ModifiedResNet, text transformer) to
one block of two heads at their head width; timm trunks to one block (a keyword timm's constructors take, passed
to both builds); Hugging Face text towers are built from a tiny config.json the test writes (mT5, NLLB's M2M100,
RoBERTa, XLM-R). Every config runs numerically: each open_clip-built tower (not timm's) once per distinct cut-down
config, and each of the 78 timm-tower configs by itself (timm's keywords cut the trunk, e.g. `depth=1`; open_clip
passes no keywords of its own, so `timm.create_model` is patched for both builds alike). Our `-quickgelu` twins and
small configs are compared too; every registered name is output-checked or listed in NOT_OUTPUT_CHECKED with its
reason (only CoCa). Released sizes are checked on the meta device (parameter counts), HF text towers in
test_hf_text_zoo.py.
"""

import copy
import json
from pathlib import Path

import open_clip
import pytest
import safetensors.torch
import torch
from open_clip.model import CustomTextCLIP

import clipmodule
from clipmodule.errors import ClipModuleError
from clipmodule.models import REFUSED_MODELS, available_models, count_parameters, create_model
from clipmodule.models.open_clip_config import config_from_open_clip
from clipmodule.models.registry import MODEL_CONFIGS, open_clip_model_configs

timm = pytest.importorskip("timm")
TOL = 1e-5
VOCAB = 1000
ZOO = open_clip_model_configs()
# Small timm keywords per trunk family: one block, small images where the trunk's position table allows.
_TIMM_CUT = {"convnext": ({"depths": (1, 1, 1, 1), "dims": (16, 32, 64, 128)}, 64),
             "swin": ({"depths": (1, 1, 1, 1), "embed_dim": 32, "num_heads": (1, 1, 1, 1)}, 224),
             "fastvit_mci3": ({"layers": (1, 1, 1, 1, 1)}, 64), "fastvit_mci4": ({"layers": (1, 1, 1, 1, 1)}, 64),
             "fastvit": ({"layers": (1, 1, 1, 1)}, 64)}
# One config per timm family and head (pool, projection), plus what else it brings (SigLIP 2's tanh text GELU, the
# i18n SO400M's text without projection, ConvNeXt-large-d's MLP head).
TIMM_CASES = ["ViT-B-16-SigLIP2", "ViT-B-16-SigLIP", "ViT-SO400M-16-SigLIP-i18n-256", "nllb-clip-base-siglip",
              "convnext_large_d", "convnext_base_w", "EVA02-B-16", "EVA01-g-14", "MobileCLIP2-S0", "MobileCLIP-B",
              "MobileCLIP2-L-14", "PE-Core-T-16-384", "ViTamin-S", "swin_base_patch4_window7_224",
              "vit_medium_patch16_gap_256", "vit_relpos_medium_patch16_cls_224"]
TIMM_NAMES = [name for name in ZOO if ZOO[name]["vision_cfg"].get("timm_model_name")]
SMALL_NAMES = ["tiny-vit", "tiny-rn", "small-vit"]
# Registered names whose outputs are not compared with open_clip's, each with its reason.
NOT_OUTPUT_CHECKED = dict.fromkeys(REFUSED_MODELS, "CoCa: its captioning decoder is not built here; create_model "
                                                   "refuses it in one line (test_coca_is_refused_in_one_line)")
FAST = ["ViT-B-32", "RN50", "ViT-L-14-CLIPA", "ViT-L-14-worldwide", "ViT-B-16-SigLIP2", "convnext_large_d",
        "xlm-roberta-base-ViT-B-32", "mt5-base-ViT-B-32"]


def _write_hf_config(folder, model_type):
    """A tiny transformers config of `model_type` in `folder`, as the hub's config.json would give it."""
    from transformers import AutoConfig

    small = {"vocab_size": VOCAB, "pad_token_id": 1}
    if model_type in ("roberta", "xlm-roberta"):
        small.update(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                     max_position_embeddings=90)
    elif model_type == "mt5":
        small.update(d_model=32, d_kv=16, d_ff=64, num_layers=1, num_decoder_layers=1, num_heads=2, pad_token_id=0)
    else:  # m2m_100 (NLLB)
        small.update(d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                     decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=90)
    AutoConfig.for_model(model_type, **small).save_pretrained(folder)


_HF_TYPES = {"google/mt5": "mt5", "facebook/nllb": "m2m_100", "roberta": "roberta", "xlm-roberta": "xlm-roberta"}


def _cut(name, root):
    """open_clip's config for `name` with its towers cut down (see the module docstring)."""
    config = copy.deepcopy(ZOO[name])
    vision, text = config["vision_cfg"], config["text_cfg"]
    if not vision.get("timm_model_name"):
        if isinstance(vision.get("layers"), list):
            vision.update(layers=[1, 1, 1, 1], width=16, image_size=64)
        else:
            head_width = vision.get("head_width", 64)
            vision.update(layers=1, width=2 * head_width, image_size=2 * vision.get("patch_size", 16))
    if text.get("hf_model_name"):
        kind = next(kind for prefix, kind in _HF_TYPES.items() if text["hf_model_name"].startswith(prefix))
        text.update(hf_model_name=str(root / f"hf-{kind}"), hf_model_pretrained=False, hf_model_type=kind)
    else:
        width = 2 * (text.get("width", 512) // text.get("heads", 8))
        text.update(layers=1, width=width, heads=2, vocab_size=min(text.get("vocab_size", 49408), VOCAB))
        if text.get("proj_type") == "none":
            config["embed_dim"] = width  # no projection: the text width is the embedding width
    return config


def _timm_cut(model_name):
    for family, (kwargs, size) in _TIMM_CUT.items():
        if model_name.startswith(family):
            return kwargs, size
    return {"depth": 1, "img_size": 64 if "giant" not in model_name else 56}, 64 if "giant" not in model_name else 56


@pytest.fixture
def small_timm(monkeypatch):
    """timm's create_model with one-block keywords, for open_clip's build and ours alike."""
    create = timm.create_model

    def create_small(model_name, **kwargs):
        return create(model_name, **{**kwargs, **_timm_cut(model_name)[0]})

    monkeypatch.setattr(timm, "create_model", create_small)


def _build(config):
    """open_clip's class for a config, as its factory picks it (HF text towers are always CustomTextCLIP)."""
    return CustomTextCLIP if config.get("custom_text") or config["text_cfg"].get("hf_model_name") else open_clip.CLIP


def _theirs(config):
    build = _build(config)
    torch.manual_seed(0)
    model = build(**{key: value for key, value in config.items() if key != "custom_text"}).eval()
    with torch.no_grad():  # open_clip zero-inits some biases; random everywhere makes every weight matter
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.02)
    return model


def _inputs(config, ours):
    vision, text_cfg = config["vision_cfg"], config["text_cfg"]
    size = _timm_cut(vision["timm_model_name"])[1] if vision.get("timm_model_name") else vision["image_size"]
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(2, 3, size, size, generator=generator)
    length = text_cfg.get("context_length", 77)
    vocab = ours.config.text.vocab_size if not text_cfg.get("hf_model_name") else VOCAB
    text = torch.randint(3, vocab - 1, (2, length), generator=generator)
    text[:, 6] = vocab - 1  # OpenAI's end-of-text: the largest id
    text[0, 4] = ours.config.text.eos_id  # the "eos" pool's token, in one row only
    if text_cfg.get("hf_model_name"):
        text[:, 9:] = 1  # padding, which the pooler must skip
    return images, text


def _assert_same_outputs(name, tmp_path, **top):
    config = {**_cut(name, tmp_path), **top}
    if config["text_cfg"].get("hf_model_name"):
        _write_hf_config(config["text_cfg"]["hf_model_name"], config["text_cfg"].pop("hf_model_type"))
    theirs = _theirs(config)
    folder = tmp_path / name
    folder.mkdir()
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": config}))
    safetensors.torch.save_file(theirs.state_dict(), str(folder / "open_clip_model.safetensors"))
    ours, _ = clipmodule.load(folder)
    images, text = _inputs(config, ours)
    with torch.no_grad():
        assert (ours.encode_image(images) - theirs.encode_image(images)).abs().max() <= TOL, name
        assert (ours.encode_text(text) - theirs.encode_text(text)).abs().max() <= TOL, name
    for key in ("logit_scale", "logit_bias"):  # SigLIP's bias too: present in both or in neither, same value
        mine, their = getattr(ours, key, None), getattr(theirs, key, None)
        assert (mine is None) == (their is None), (name, key)
        assert mine is None or torch.equal(mine.detach().flatten(), their.detach().flatten()), (name, key)


def _cut_cases():
    """Configs whose cut-down form is one and the same test (ViT-L-14 at 224, 280, 336 px): {shortest name: all}."""
    groups: dict[str, list[str]] = {}
    for name in ZOO:
        if not ZOO[name]["vision_cfg"].get("timm_model_name") and name not in REFUSED_MODELS:
            groups.setdefault(json.dumps(_cut(name, Path("/hf")), sort_keys=True), []).append(name)
    return {min(names, key=len): names for names in groups.values()}


OURS = _cut_cases()


def test_every_open_clip_config_is_registered_by_name():
    names = set(available_models())
    assert set(ZOO) <= names and len(ZOO) == 144
    assert set(REFUSED_MODELS) == {name for name in ZOO if "multimodal_cfg" in ZOO[name]}  # CoCa only
    for name in ("ViT-B-16-SigLIP2", "PE-Core-L-14-336", "MobileCLIP2-S4", "ViT-L-14-CLIPA", "ViT-H-14-worldwide"):
        assert clipmodule.create_model.__module__ and name in names


def test_shipped_configs_are_the_installed_open_clips():
    for name, config in ZOO.items():
        assert open_clip.get_model_config(name) == config, name


@pytest.mark.parametrize("section, key, value", [("vision_cfg", "pool_type", "none"),
                                                 ("text_cfg", "pool_type", "middle"),
                                                 ("text_cfg", "act_kwargs", {"approximate": "sigmoid"}),
                                                 ("text_cfg", "proj_type", "mlp"),
                                                 ("vision_cfg", "attentional_pool", True)])
def test_what_is_not_built_is_refused_by_name_in_one_line(section, key, value, tmp_path):
    config = _cut("ViT-B-32", tmp_path)
    config[section][key] = value
    with pytest.raises(ClipModuleError, match=f"cfg.json: {section}.{key}") as info:
        config_from_open_clip(config, "cfg.json")
    assert "\n" not in str(info.value)


def test_text_read_at_the_first_token_equals_open_clip(tmp_path):
    config = _cut("ViT-B-32", tmp_path)
    config["text_cfg"].update(pool_type="first", no_causal_mask=True)
    theirs = _theirs(config)
    ours = clipmodule.CLIP(config_from_open_clip(config, "cfg.json")).eval()
    ours.load_state_dict(theirs.state_dict())
    text = _inputs(config, ours)[1]
    with torch.no_grad():
        assert (ours.encode_text(text) - theirs.encode_text(text)).abs().max() <= TOL


def test_coca_is_refused_in_one_line():
    with pytest.raises(ClipModuleError, match="coca_ViT-B-32.*CoCa's captioning decoder") as info:
        create_model("coca_ViT-B-32")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("name", [pytest.param(name, marks=() if name in FAST else pytest.mark.slow)
                                  for name in OURS])
def test_open_clip_towers_equal_open_clip(name, tmp_path):
    """Every config whose towers open_clip builds itself (62), one test per distinct cut-down config (44)."""
    _assert_same_outputs(name, tmp_path)


def test_every_config_of_open_clips_towers_is_covered():
    assert sum(len(names) for names in OURS.values()) == 62 and len(OURS) == 44


@pytest.mark.parametrize("name", [pytest.param(name, marks=() if name in FAST else pytest.mark.slow)
                                  for name in TIMM_NAMES])
def test_timm_towers_equal_open_clip(name, tmp_path, small_timm):
    """Every config with a timm image tower (78): the trunk cut to one block (timm's own keywords, the same in
    open_clip's build and ours), its head, and the text tower cut as above."""
    _assert_same_outputs(name, tmp_path)


def _timm_signature(name):
    """What our code around a timm trunk depends on: the trunk's family, its head, and the text tower's options."""
    vision, text = ZOO[name]["vision_cfg"], ZOO[name]["text_cfg"]
    text_options = {key: text.get(key) for key in ("no_causal_mask", "pool_type", "proj_type", "proj_bias",
                                                   "act_kwargs", "norm_kwargs", "hf_model_name")}
    return (vision["timm_model_name"].split("_")[0], vision.get("timm_pool"), vision.get("timm_proj"),
            vision.get("timm_proj_bias"), json.dumps(text_options, sort_keys=True) if text_options["hf_model_name"]
            is None else "hf", ZOO[name].get("quick_gelu", False))


@pytest.mark.parametrize("twin", ["ViT-B-16-plus-240-quickgelu", "ViT-g-14-quickgelu"])
def test_quickgelu_twins_equal_open_clip_with_quick_gelu(twin, tmp_path):
    """Our `-quickgelu` twins of names open_clip has without one: open_clip's config with `quick_gelu: true`."""
    base = twin.removesuffix("-quickgelu")
    assert MODEL_CONFIGS[twin] == config_from_open_clip({**ZOO[base], "quick_gelu": True}, twin)
    _assert_same_outputs(base, tmp_path, quick_gelu=True)


@pytest.mark.parametrize("name", SMALL_NAMES)
def test_small_configs_equal_open_clip(name, tmp_path):
    """This project's own small configs, written as open_clip hub folders and read back by open_clip."""
    torch.manual_seed(0)
    ours = create_model(name).eval()
    clipmodule.save_checkpoint(ours, tmp_path / name, format="open_clip")
    theirs, _, _ = open_clip.create_model_and_transforms(f"local-dir:{tmp_path / name}")
    theirs.eval()
    images, text = _inputs({"vision_cfg": {"image_size": ours.config.vision.image_size}, "text_cfg": {}}, ours)
    with torch.no_grad():
        assert (ours.encode_image(images) - theirs.encode_image(images)).abs().max() <= TOL, name
        assert (ours.encode_text(text) - theirs.encode_text(text)).abs().max() <= TOL, name


def test_every_registered_name_is_output_checked_or_excused():
    """Each name `available_models()` lists is compared with open_clip's outputs by a test above, or is listed in
    NOT_OUTPUT_CHECKED with its reason; a new registered name fails here until it is one or the other."""
    checked = {*(member for names in OURS.values() for member in names), *TIMM_NAMES, *SMALL_NAMES,
               "ViT-B-16-plus-240-quickgelu", "ViT-g-14-quickgelu"}
    assert not checked & set(NOT_OUTPUT_CHECKED)
    assert set(available_models()) == checked | set(NOT_OUTPUT_CHECKED)
    assert len(checked) == 62 + 78 + 2 + 3 and len(NOT_OUTPUT_CHECKED) == 4


def test_every_timm_config_has_a_representative():
    timm_names = [name for name in ZOO if ZOO[name]["vision_cfg"].get("timm_model_name")]
    assert len(timm_names) == 78
    assert {_timm_signature(name) for name in timm_names} == {_timm_signature(name) for name in TIMM_CASES}


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ViT-SO400M-16-SigLIP2-512", "ViT-SO400M-16-SigLIP-i18n-256",
                                  "ViT-gopt-16-SigLIP2-256", "EVA02-E-14-plus", "PE-Core-bigG-14-448",
                                  "ViT-bigG-14-worldwide", "ViT-bigG-14-CLIPA-336", "convnext_xxlarge"])
def test_large_configs_have_open_clips_parameter_count(name):
    config = {key: value for key, value in ZOO[name].items() if key != "custom_text"}
    build = _build(ZOO[name])
    with torch.device("meta"):
        theirs, ours = build(**config), create_model(name)
    assert count_parameters(ours) == sum(parameter.numel() for parameter in theirs.parameters())
