"""The tokenizers open_clip's zoo names (SigLIP 2's Gemma vocabulary, mT5, XLM-R, NLLB, CLIPA's BERT with its
separator stripped) give open_clip's ids: each is trained here on a small corpus by transformers' own class and saved
as its hub repo holds it (`save_pretrained`: tokenizer.json + tokenizer_config.json), then read by `tokenizers`
here and by transformers' AutoTokenizer in open_clip's HFTokenizer."""

import json

import open_clip
import pytest
import torch
import transformers

from clipmodule.hf_tokenizer import HFTokenizer
from clipmodule.models import get_model_config

CORPUS = ["a photo of a cat", "a photo of a dog sitting on a red sofa", "a diagram of the model",
          "the quick brown fox jumps over the lazy dog", "zebra crossing at the café"] * 20
TEXTS = ["A photo of a CAT!", "the quick brown fox jumps over the lazy dog, " * 3, "Zebra_crossing &amp; café", "a"]
# (transformers class, a zoo name that reads it, open_clip's tokenizer_kwargs for that name)
FAMILIES = {"GemmaTokenizer": "ViT-B-16-SigLIP2", "T5Tokenizer": "ViT-L-14-worldwide",
            "XLMRobertaTokenizer": "xlm-roberta-base-ViT-B-32", "NllbTokenizer": "nllb-clip-base",
            "BertTokenizer": "ViT-L-14-CLIPA"}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("tokenizers")
    out = {}
    for name in FAMILIES:
        tokenizer = getattr(transformers, name)().train_new_from_iterator(CORPUS, vocab_size=120)
        tokenizer.save_pretrained(root / name)
        out[name] = root / name
    return out


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_ids_equal_open_clips_for_each_family(folders, family):
    text = get_model_config(FAMILIES[family]).text
    assert text.tokenizer.startswith("hf:")
    theirs = open_clip.tokenizer.HFTokenizer(str(folders[family]), context_length=16, clean=text.tokenizer_clean,
                                             strip_sep_token=text.tokenizer_strip_sep)
    ours = HFTokenizer(folders[family], 16, clean=text.tokenizer_clean, strip_sep=text.tokenizer_strip_sep)
    assert torch.equal(ours(TEXTS), theirs(TEXTS)), family
    assert torch.equal(ours(TEXTS, context_length=8), theirs(TEXTS, context_length=8)), family


def test_gemma_pads_left_unless_its_config_says_otherwise(folders, tmp_path):
    ids = HFTokenizer(folders["GemmaTokenizer"], 16)(["a cat"])
    assert ids[0, 0] == 0 and ids[0, -1] != 0  # the class's own padding side, as transformers applies it
    folder = tmp_path / "right"
    folder.mkdir()
    for file in folders["GemmaTokenizer"].iterdir():
        (folder / file.name).write_bytes(file.read_bytes())
    config = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**config, "padding_side": "right"}))
    theirs = open_clip.tokenizer.HFTokenizer(str(folder), context_length=16)
    assert torch.equal(HFTokenizer(folder, 16)(TEXTS), theirs(TEXTS))


def test_clipa_strips_the_separator(folders):
    ids = HFTokenizer(folders["BertTokenizer"], 16, strip_sep=True)(["a cat"])
    sep = HFTokenizer(folders["BertTokenizer"], 16).tokenizer.token_to_id("[SEP]")
    assert sep not in ids.tolist()[0] and sep in HFTokenizer(folders["BertTokenizer"], 16)(["a cat"]).tolist()[0]
