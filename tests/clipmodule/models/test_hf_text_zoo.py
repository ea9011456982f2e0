"""open_clip's configs with a Hugging Face text tower (mT5, XLM-R, NLLB's M2M100, RoBERTa) at their released size and
cut down with their tokenizers.

Real size: each tower's config.json is written with its hub repo's released dimensions and both CLIP models are built
on the meta device; the whole model's parameter count equals open_clip's, and the text tower's equals a count derived
here from the dimensions. Cut down: a tiny config.json plus a tokenizer trained here, saved as the hub repo holds them
(config.json, tokenizer.json, tokenizer_config.json); text encoded end to end (our tokenizer then our model) equals
open_clip's (its HFTokenizer then its HFTextEncoder) on the same weights.
"""

import json

import open_clip
import pytest
import safetensors.torch
import torch
import transformers
from open_clip.model import CustomTextCLIP
from transformers import AutoConfig

import clipmodule
from clipmodule.models import count_parameters, create_model
from clipmodule.models.registry import open_clip_model_configs

ZOO = open_clip_model_configs()
# Released dimensions, as each repo's config.json on the Hugging Face hub gives them (huggingface.co/<repo>/blob/main/
# config.json): model_type and the size fields; every other field keeps transformers' default, which is the hub's.
REAL = {
    "roberta-base": ("roberta", {"vocab_size": 50265, "hidden_size": 768, "num_hidden_layers": 12,
                                 "num_attention_heads": 12, "intermediate_size": 3072, "max_position_embeddings": 514,
                                 "type_vocab_size": 1, "pad_token_id": 1}),
    "xlm-roberta-base": ("xlm-roberta", {"vocab_size": 250002, "hidden_size": 768, "num_hidden_layers": 12,
                                         "num_attention_heads": 12, "intermediate_size": 3072,
                                         "max_position_embeddings": 514, "type_vocab_size": 1, "pad_token_id": 1}),
    "xlm-roberta-large": ("xlm-roberta", {"vocab_size": 250002, "hidden_size": 1024, "num_hidden_layers": 24,
                                          "num_attention_heads": 16, "intermediate_size": 4096,
                                          "max_position_embeddings": 514, "type_vocab_size": 1, "pad_token_id": 1}),
    "google/mt5-base": ("mt5", {"vocab_size": 250112, "d_model": 768, "d_ff": 2048, "d_kv": 64, "num_heads": 12,
                                "num_layers": 12, "num_decoder_layers": 12, "feed_forward_proj": "gated-gelu",
                                "tie_word_embeddings": False, "pad_token_id": 0}),
    "google/mt5-xl": ("mt5", {"vocab_size": 250112, "d_model": 2048, "d_ff": 5120, "d_kv": 64, "num_heads": 32,
                              "num_layers": 24, "num_decoder_layers": 24, "feed_forward_proj": "gated-gelu",
                              "tie_word_embeddings": False, "pad_token_id": 0}),
    "facebook/nllb-200-distilled-600M": ("m2m_100", {"vocab_size": 256206, "d_model": 1024, "encoder_layers": 12,
                                                     "decoder_layers": 12, "encoder_attention_heads": 16,
                                                     "decoder_attention_heads": 16, "encoder_ffn_dim": 4096,
                                                     "decoder_ffn_dim": 4096, "max_position_embeddings": 1024,
                                                     "scale_embedding": True, "pad_token_id": 1}),
    "facebook/nllb-200-distilled-1.3B": ("m2m_100", {"vocab_size": 256206, "d_model": 1024, "encoder_layers": 24,
                                                     "decoder_layers": 24, "encoder_attention_heads": 16,
                                                     "decoder_attention_heads": 16, "encoder_ffn_dim": 8192,
                                                     "decoder_ffn_dim": 8192, "max_position_embeddings": 1024,
                                                     "scale_embedding": True, "pad_token_id": 1}),
}
HF_NAMES = [name for name in ZOO if ZOO[name]["text_cfg"].get("hf_model_name") and "multimodal_cfg" not in ZOO[name]]


def _encoder_count(model_type, c):
    """The text encoder's parameters, counted from the dimensions (biases, norms and embeddings included)."""
    if model_type == "mt5":  # embeddings; per block q,k,v,o (no bias), gated FFN, two RMS norms; relative bias; norm
        inner = c["num_heads"] * c["d_kv"]
        block = 4 * c["d_model"] * inner + 3 * c["d_model"] * c["d_ff"] + 2 * c["d_model"]
        return c["vocab_size"] * c["d_model"] + c["num_layers"] * block + 32 * c["num_heads"] + c["d_model"]
    if model_type == "m2m_100":  # embeddings (sinusoidal positions: no weights); per layer attention, FFN, 2 norms
        d, f = c["d_model"], c["encoder_ffn_dim"]
        layer = 4 * (d * d + d) + (d * f + f) + (f * d + d) + 4 * d
        return c["vocab_size"] * d + c["encoder_layers"] * layer + 2 * d
    h, i = c["hidden_size"], c["intermediate_size"]  # (XLM-)RoBERTa: word, position, type embeddings and their norm
    layer = 4 * (h * h + h) + (h * i + i) + (i * h + h) + 4 * h
    return (c["vocab_size"] + c["max_position_embeddings"] + c["type_vocab_size"]) * h + 2 * h + \
        c["num_hidden_layers"] * layer


def _projection_count(width, embed_dim, proj_type):
    if proj_type == "linear":
        return width * embed_dim
    hidden = (width + embed_dim) // 2  # "mlp", open_clip's default for HF towers
    return width * hidden + hidden * embed_dim


@pytest.mark.slow
@pytest.mark.parametrize("name", HF_NAMES)
def test_released_size_parameter_count_equals_open_clips_and_the_derived_one(name, tmp_path):
    text_cfg = ZOO[name]["text_cfg"]
    model_type, dims = REAL[text_cfg["hf_model_name"]]
    AutoConfig.for_model(model_type, **dims).save_pretrained(tmp_path / "tower")
    config = {key: value for key, value in ZOO[name].items() if key != "custom_text"}
    config["text_cfg"] = {**text_cfg, "hf_model_name": str(tmp_path / "tower"), "hf_model_pretrained": False}
    with torch.device("meta"):
        theirs = CustomTextCLIP(**config)
        ours = create_model(name, text={"hf_model_name": str(tmp_path / "tower")})
    assert count_parameters(ours) == sum(parameter.numel() for parameter in theirs.parameters())
    width = dims.get("hidden_size", dims.get("d_model"))
    derived = _encoder_count(model_type, dims) + (text_cfg.get("hf_pooler_type") == "cls_pooler" and
                                                  model_type != "m2m_100") * (width * width + width)
    assert count_parameters(ours.text) == derived + _projection_count(width, ZOO[name]["embed_dim"],
                                                                       text_cfg.get("hf_proj_type", "mlp"))


CORPUS = ["a photo of a cat", "a photo of a dog sitting on a red sofa", "une photo d'un chat",
          "the quick brown fox jumps over the lazy dog", "zebra crossing at the café"] * 20
TEXTS = ["a photo of a cat", "une photo d'un chien sur un canapé rouge", "a cat", "the fox"]
TOKENIZERS = {"roberta": "RobertaTokenizer", "xlm-roberta": "XLMRobertaTokenizer", "mt5": "T5Tokenizer",
              "m2m_100": "NllbTokenizer"}
SMALL = {"roberta": {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64,
                     "max_position_embeddings": 40},
         "mt5": {"d_model": 32, "d_kv": 16, "d_ff": 64, "num_layers": 1, "num_decoder_layers": 1, "num_heads": 2},
         "m2m_100": {"d_model": 32, "encoder_layers": 1, "decoder_layers": 1, "encoder_attention_heads": 2,
                     "decoder_attention_heads": 2, "encoder_ffn_dim": 64, "decoder_ffn_dim": 64,
                     "max_position_embeddings": 40}}
CUT_VISION = {"layers": 1, "width": 64, "head_width": 32, "patch_size": 8, "image_size": 16}


def _tiny_tower(model_type, folder):
    """A tiny tower in its hub repo's layout: config.json and the tokenizer files, their special ids agreeing."""
    tokenizer = getattr(transformers, TOKENIZERS[model_type])().train_new_from_iterator(CORPUS, vocab_size=120)
    tokenizer.save_pretrained(folder)
    size = SMALL["roberta" if model_type == "xlm-roberta" else model_type]
    AutoConfig.for_model(model_type, vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                         **size).save_pretrained(folder)


@pytest.mark.parametrize("name", ["roberta-ViT-B-32", "xlm-roberta-large-ViT-H-14", "mt5-xl-ViT-H-14",
                                  "nllb-clip-base"])
def test_cut_down_tower_with_its_tokenizer_equals_open_clip(name, tmp_path):
    model_type = REAL[ZOO[name]["text_cfg"]["hf_model_name"]][0]
    _tiny_tower(model_type, tmp_path / "tower")
    text_cfg = {**ZOO[name]["text_cfg"], "hf_model_name": str(tmp_path / "tower"),
                "hf_tokenizer_name": str(tmp_path / "tower"), "hf_model_pretrained": False, "context_length": 24}
    config = {**ZOO[name], "vision_cfg": CUT_VISION, "text_cfg": text_cfg}
    torch.manual_seed(0)
    theirs = CustomTextCLIP(**{key: value for key, value in config.items() if key != "custom_text"}).eval()
    with torch.no_grad():
        for parameter in theirs.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.02)
    hub = tmp_path / "hub"
    hub.mkdir()
    (hub / "open_clip_config.json").write_text(json.dumps({"model_cfg": config}))
    safetensors.torch.save_file(theirs.state_dict(), str(hub / "open_clip_model.safetensors"))
    ours, _ = clipmodule.load(hub)
    their_ids = open_clip.tokenizer.HFTokenizer(str(tmp_path / "tower"), context_length=24)(TEXTS)
    our_ids = clipmodule.get_tokenizer(ours)(TEXTS)  # hf_tokenizer_name: the folder
    assert torch.equal(our_ids, their_ids) and (our_ids == ours.text.hf_config.pad_token_id).any()
    with torch.no_grad():
        assert (ours.encode_text(our_ids) - theirs.encode_text(their_ids)).abs().max() <= 1e-5
