"""SigLIP-style tokenizers: a sentencepiece vocabulary the test builds, saved as tokenizer.json, read by
`tokenizers` here and by transformers in open_clip: the same ids."""

import json

import open_clip
import pytest
import torch

import clipmodule
from clipmodule.errors import ClipModuleError
from clipmodule.hf_tokenizer import HFTokenizer

spm = pytest.importorskip("sentencepiece")
CORPUS = ["a photo of a cat", "a photo of a dog sitting on a red sofa", "a diagram of the model",
          "the quick brown fox jumps over the lazy dog", "zebra crossing at the café"]


@pytest.fixture(scope="module")
def tokenizer_folder(tmp_path_factory):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    root = tmp_path_factory.mktemp("spm")
    (root / "corpus.txt").write_text("\n".join(CORPUS * 40))
    spm.SentencePieceTrainer.train(input=str(root / "corpus.txt"), model_prefix=str(root / "m"), vocab_size=60,
                                   hard_vocab_limit=False, model_type="unigram", pad_id=0, eos_id=1, unk_id=2,
                                   bos_id=-1, minloglevel=2)
    processor = spm.SentencePieceProcessor(model_file=str(root / "m.model"))
    vocab = [(processor.id_to_piece(i), processor.get_score(i)) for i in range(processor.get_piece_size())]
    tokenizer = Tokenizer(models.Unigram(vocab, unk_id=2, byte_fallback=False))  # T5/SigLIP's kind of tokenizer
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tokenizer.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", eos_token="</s>",
                            unk_token="<unk>").save_pretrained(root / "tok")
    return root / "tok"


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
