"""The tokenizer gives open_clip's SimpleTokenizer ids; its shortcuts equal the slow paths; HF agrees."""

import gzip
import hashlib
import html
import pickle
import random
import string
from pathlib import Path

import ftfy
import open_clip
import pytest
import torch
from open_clip.tokenizer import SimpleTokenizer
from transformers import CLIPTokenizer

from clipmodule.errors import ClipModuleError
from clipmodule.tokenizer import (
    _SPLIT_WORDS,
    ClipTokenizer,
    _clean_text_full,
    _is_plain_ascii,
    clean_text,
    default_bpe_path,
    default_tokenizer,
    split_words,
    tokenize,
    write_hf_vocab_files,
)

VARIED = [
    "A photo of a CAT.",
    "Hello, World!!! ...?!?! --- *** === ~~~ ^_^ :-) <3",
    "it's IT'S we'll they've I'm she'd you're can't rock'n'roll 'quoted' \"double\" ’curly’ “quotes”",
    "(parens) [brackets] {braces} <angle> a/b\\c|d email@example.com http://x.y/z?q=1&r=2#frag",
    "#hashtag @user $100 50% 3.14159 1,000,000 2nd 10x12 C++ C# .NET node.js",
    "😀👍🏽👨‍👩‍👧‍👦🏳️‍🌈 ❤️ ✔ ★",
    "Crème brûlée à Paris, naïve façade, Straße ß ẞ, niño, ÆØÅ",
    "東京タワーの夜景 北京烤鸭 서울의 밤",
    "Привет, МИР! Ёлка",
    "ΟΔΟΣ ΣΟΦΟΣ Σίσυφος ὀδυσσεύς",
    "İstanbul ıIİi DİYARBAKIR",
    "fish &amp; chips, &amp;amp; &lt;b&gt;bold&lt;/b&gt; &quot;q&quot; it&#39;s &#x27;x&#x27; a&nbsp;b "
    "&eacute;t&eacute;",
    "AT&T R&D Tom & Jerry &c &",
    "cafÃ© â€œmojibakeâ€\x9d Ã¡rvÃ­ztÅ±rÅ‘",
    "ﬁne ﬂour ＦＵＬＬＷＩＤＴＨ １２３",
    "ctrl\x00\x01\x07 \x1b[31mred\x1b[0m \x7f c1\x85\x9f",
    "tab\there\nnew\r\nline\x0b\x0cform",
    "nbsp\u00a0thin\u2009ideo\u3000zw\u200bsp ls\u2028ps\u2029 fs\x1c\x1d\x1e\x1f soft\u00adhyphen bom\ufeff",
    "   leading and trailing   ",
    "",
    " \n\t ",
    "it'ſ long s, a\u0345b ᾳ ᾼ, e\u0301 combining, Ǆ ǅ ǆ, ﬅ, K Kelvin Å",
    "١٢٣ ٤ ² ³ ½ Ⅻ ⑦ 𝟙",
    "עברית العربية हिन्दी ไทย ქართული Ελληνικά",
    "lone \ud83d surrogate",
    "a" * 300,
    " ".join(["word"] * 100),
    "x " * 80,
]
RANDOM_POOL = (
    list(string.ascii_letters + string.digits + string.punctuation) * 3
    + [" "] * 20
    + ["\t", "\n", "\r", "\x0b", "\x00", "\x1b", "\x7f", "\x85", "\x9f", "\u00a0", "\u2009", "\u3000", "\u200b"]
    + ["'s", "'t", "'re", "'ll", "'d", "'ve", "'m", "'ſ", "'S", "&amp;", "&lt;", "&#39;", "&#x27;", "&nbsp;"]
    + ["&amp;amp;", "&eacute;", "é", "ñ", "ß", "ø", "İ", "ı", "Σ", "σς", "ΑΘΗΝΑ", "ё", "Ж", "東", "京", "の"]
    + ["한", "😀", "👍🏽", "‍", "️", "\u0301", "\u0345", "ﬁ", "Ａ", "１", "“", "”", "’", "—", "…", "½", "²", "٣"]
    + ["Ã©", "â€™", "Ã", "\x80", "ǅ", "ﬅ", "K", "\U0001d7d9", "\u2028"]
)


def random_texts(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choices(RANDOM_POOL, k=rng.randrange(0, 40))) for _ in range(n)]


def random_ascii_texts(n: int, seed: int) -> list[str]:
    """Printable ASCII heavy in '&', ';', '#' and apostrophes: the fast path's edge."""
    rng = random.Random(seed)
    pool = list(string.printable[:95]) + ["& ", "&", ";", "#", "'", "  ", "&amp;", "&#39;", "&lt", "x"]
    return ["".join(rng.choices(pool, k=rng.randrange(0, 30))) for _ in range(n)]


@pytest.fixture(scope="module")
def ours():
    return ClipTokenizer()


@pytest.fixture(scope="module")
def theirs():
    return SimpleTokenizer()


@pytest.fixture(scope="module")
def hf_tokenizer(tmp_path_factory):
    vocab_path, merges_path = write_hf_vocab_files(tmp_path_factory.mktemp("hf"))
    # Positional: transformers 5 ignores the old keyword names and builds a 2-token vocabulary.
    return CLIPTokenizer(str(vocab_path), str(merges_path))


def test_vocabulary_is_openais(ours):
    shipped = default_bpe_path().read_bytes()
    assert hashlib.sha256(shipped).hexdigest() == "924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a"
    notice = (default_bpe_path().parent / "LICENSE-openai-clip.txt").read_text()
    assert "Copyright (c) 2021 OpenAI" in notice and "bpe_simple_vocab_16e6.txt.gz" in notice
    assert (ours.vocab_size, ours.sot_token_id, ours.eot_token_id) == (49408, 49406, 49407)


@pytest.mark.parametrize("text", VARIED, ids=range(len(VARIED)))
def test_ids_equal_open_clip_on_varied_text(ours, theirs, text):
    assert ours.encode(text) == theirs.encode(text)


def test_padded_tensor_equals_open_clip_tokenize():
    texts = VARIED + random_texts(3000, seed=0)
    assert torch.equal(tokenize(texts, truncate=True), open_clip.tokenize(texts))


def test_ids_equal_open_clip_for_every_code_point_below_0x800_and_a_sample_above(ours, theirs):
    rng = random.Random(1)
    code_points = list(range(0x800)) + rng.sample(range(0x800, 0xD800), 1500)
    code_points += rng.sample(range(0xE000, 0x110000), 1500)
    text = " ".join(chr(c) + chr(c) + "a" + chr(c) + "1" for c in code_points)
    assert ours.encode(text) == theirs.encode(text)


def test_literal_special_tokens_map_to_their_ids_as_in_openai_and_hf(ours, hf_tokenizer):
    # open_clip 3 renamed its specials to <start_of_text>/<end_of_text> and splits these up instead.
    for text in ["<|endoftext|>", "a <|startoftext|>b<|ENDOFTEXT|> c", "<|endoftext"]:
        assert ours.encode(text) == hf_tokenizer(clean_text(text), add_special_tokens=False)["input_ids"]
    assert ours.encode("x <|endoftext|>") == [ours.encode("x")[0], 49407]


def test_fast_path_equals_full_clean_up():
    texts = random_ascii_texts(8_000, seed=2) + ["Tom & Jerry", "R&D", "a &amp; b", "x&", "it&#39;s"]
    fast = [t for t in texts if _is_plain_ascii(t)]
    assert len(fast) > len(texts) / 4 and _is_plain_ascii("Tom & Jerry") and not _is_plain_ascii("a &amp; b")
    for text in fast:
        assert ftfy.fix_text(text) == text and html.unescape(text) == text
    for text in texts:
        assert clean_text(text) == _clean_text_full(text)
        assert split_words(text) == _SPLIT_WORDS.findall(_clean_text_full(text))


def test_padding_and_shapes():
    ids = tokenize(["a cat", "", "a photo of a dog"])
    assert ids.dtype == torch.long and ids.shape == (3, 77)
    cat = default_tokenizer().encode("a cat")
    assert ids[0, : len(cat) + 2].tolist() == [49406, *cat, 49407] and not ids[0, len(cat) + 2 :].any()
    assert ids[1, :3].tolist() == [49406, 49407, 0]
    assert tokenize("a cat").shape == (1, 77) and tokenize(["a cat"], context_length=16).shape == (1, 16)
    assert tokenize([]).shape == (0, 77)


def test_truncation_keeps_the_first_tokens_then_eot_like_open_clip():
    long_text = " ".join(f"word{i}" for i in range(200))
    ids = tokenize([long_text, "short"], context_length=20, truncate=True)
    assert torch.equal(ids, open_clip.tokenize([long_text, "short"], context_length=20))
    assert ids[0, 1:19].tolist() == default_tokenizer().encode(long_text)[:18] and ids[0, 19] == 49407


def test_too_long_text_raises_one_line_naming_it_unless_truncate():
    exactly_full = " ".join(["cat"] * 75)
    assert tokenize(exactly_full)[0, -1] == 49407
    with pytest.raises(ClipModuleError) as error:
        tokenize(["a cat", exactly_full + " cat"])
    message = str(error.value)
    assert "\n" not in message and "text 1 " in message and "78 tokens" in message and "77" in message
    assert tokenize(exactly_full + " cat", truncate=True).shape == (1, 77)
    with pytest.raises(ClipModuleError):
        ClipTokenizer()(["a cat"], context_length=1)


def test_decode_round_trips_plain_text_and_equals_open_clip(ours, theirs):
    text = "a photo of a cat, it's 3 years old!"
    assert ours.decode(ours.encode(text)) == "a photo of a cat , it 's 3 years old ! "
    for text in VARIED[:12]:
        assert ours.decode(torch.tensor(ours.encode(text))).split() == split_words(text)
    rng = random.Random(3)
    for _ in range(200):  # arbitrary ids, invalid UTF-8 included: same replacement characters
        ids = rng.choices(range(49406), k=rng.randrange(1, 12))
        assert ours.decode(ids) == theirs.decode(ids)
    assert ours.decode([49406, 320, 49407]) == "<|startoftext|>a <|endoftext|>"
    with pytest.raises(ClipModuleError, match="49408"):
        ours.decode([320, 49408])


def test_hf_tokenizer_built_offline_gives_the_same_ids(ours, hf_tokenizer):
    assert len(hf_tokenizer) == 49408 and hf_tokenizer.convert_tokens_to_ids("<|endoftext|>") == 49407
    # HF has no ftfy, HTML unescaping or Python lower-casing, and splits with Oniguruma: it gets
    # OpenAI's clean-up first and no texts with U+0345 or "'ſ", which Oniguruma splits otherwise.
    texts = [t for t in VARIED + random_texts(1000, seed=4) if "\u0345" not in t and "ſ" not in t]
    cleaned = [clean_text(t) for t in texts]
    batch = hf_tokenizer(cleaned, padding="max_length", max_length=77, truncation=True, return_tensors="pt")
    hf_ids = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, 0)  # HF pads with EOT
    assert torch.equal(hf_ids, tokenize(texts, truncate=True))


def test_small_word_cache_starts_afresh_and_gives_the_same_ids(ours):
    small = ClipTokenizer(max_cached_words=10)
    texts = random_texts(300, seed=5)
    for chunk in range(0, 300, 50):
        assert torch.equal(small(texts[chunk : chunk + 50]), ours(texts[chunk : chunk + 50]))
    assert len(small._word_ids) < 400


def test_tokenizer_survives_pickling_for_spawned_dataloader_workers(ours):
    copy = pickle.loads(pickle.dumps(ours))
    assert torch.equal(copy(VARIED), ours(VARIED))


def test_default_tokenizer_is_built_once():
    assert default_tokenizer() is default_tokenizer()


def test_bad_merges_file_is_one_line_error(tmp_path):
    missing, not_gzip, short = tmp_path / "missing.txt.gz", tmp_path / "plain.txt.gz", tmp_path / "short.txt.gz"
    not_gzip.write_text("#version: 0.2\ni n\n")
    with gzip.open(short, "wt") as f:
        f.write("#version: 0.2\ni n\nt h\n")
    for path in (missing, not_gzip, short):
        with pytest.raises(ClipModuleError) as error:
            ClipTokenizer(path)
        assert str(path) in str(error.value) and "\n" not in str(error.value)
    assert ClipTokenizer(Path(default_bpe_path())).encode("a cat") == default_tokenizer().encode("a cat")


@pytest.mark.parametrize("texts, named", [
    ([None], "text 0: it is of type NoneType"),
    (["a cat", b"a dog"], "text 1: it is of type bytes"),
    (["a cat", 3], "text 1: it is of type int"),
    (b"a cat", "cannot tokenize bytes"),
    (None, "cannot tokenize an object of type NoneType"),
])
def test_a_text_that_is_not_a_str_is_one_line_naming_it(texts, named):
    with pytest.raises(ClipModuleError, match=named) as error:
        tokenize(texts)
    assert "\n" not in str(error.value)
    with pytest.raises(ClipModuleError, match="of type bytes"):
        default_tokenizer().encode(b"a cat")


def test_a_model_reading_fewer_tokens_says_how_to_tokenize_for_it(tmp_path):
    import clipmodule

    clipmodule.save_checkpoint(clipmodule.create_model("tiny-vit", context_length=24), tmp_path / "demo.safetensors")
    model, _ = clipmodule.load(tmp_path / "demo.safetensors")  # a checkpoint as the demo trains it
    assert model.context_length == 24 and clipmodule.create_model("tiny-vit").context_length == 77
    with pytest.raises(ClipModuleError) as error:
        model.encode_text(clipmodule.tokenize(["a cat"]))
    assert str(error.value) == ("text has 77 tokens but this model reads 24 tokens: "
                                "tokenize(texts, context_length=24)")
    with torch.no_grad():
        assert model.encode_text(clipmodule.tokenize(["a cat"], context_length=model.context_length)).shape == (1, 64)
