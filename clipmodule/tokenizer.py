"""OpenAI's CLIP tokenizer: byte-level BPE over 49,408 tokens, the merges run by the Rust `tokenizers`.

The ids equal open_clip's `SimpleTokenizer` (tests) and so OpenAI's `clip.tokenize`, whose code
open_clip copied: the same merges file (package data, MIT licence in assets/LICENSE-openai-clip.txt),
the same vocabulary order, the same clean-up (ftfy, HTML unescaping twice, whitespace collapse,
lower-casing) and the same word split (OpenAI's regex, run by the same `regex` library, same flags).

Where the time goes: a `tokenizers` pipeline costs ~2 us per token on our 2-core dev VM even for
words it has cached (it tracks offsets and builds an Encoding per text), more than open_clip spends
on a common word. So Python splits words with one C-level findall, looks each word up in a dict of
word -> ids, and hands only words it has not seen yet to Rust's BPE, in one batch. No Python BPE loop.
"""

from __future__ import annotations

import functools
import gzip
import html
import json
import re
from itertools import chain
from pathlib import Path

import ftfy
import numpy as np
import regex
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

from clipmodule.errors import ClipModuleError

SOT_TOKEN = "<|startoftext|>"
EOT_TOKEN = "<|endoftext|>"
DEFAULT_CONTEXT_LENGTH = 77
# OpenAI reads lines 1 .. 49152-256-2 of the merges file: 48,894 merges, so that 256 byte tokens,
# their 256 end-of-word twins, the merges and the 2 specials make 49,408 ids.
NUM_MERGES = 49152 - 256 - 2
# OpenAI's word split. A literal "<|endoftext|>" in a caption is one word whose id is 49407, as in
# OpenAI's tokenizer and HF's (open_clip 3 names its specials "<end_of_text>", so it splits it up).
SPLIT_PATTERN = r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
# Oniguruma (the regex engine inside `tokenizers`) cuts U+0345 and "'ſ" otherwise and classifies
# letters by an older Unicode version, so the split stays with Python's `regex`, as OpenAI's does.
_SPLIT_WORDS = regex.compile(SPLIT_PATTERN, regex.IGNORECASE)
# On lower-cased printable ASCII the letters are a-z, the digits 0-9 and IGNORECASE has nothing to
# fold, so this pattern cuts the same words; the stdlib `re` runs it twice as fast. Tests compare.
_SPLIT_ASCII_WORDS = re.compile(
    r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[a-z]+|[0-9]|[^\sa-z0-9]+"""
)
# Word -> ids entries kept before the cache starts afresh: ~250-300 bytes each, so <= ~30 MB per
# process (open_clip's cache never stops growing). Frequent words come back within a batch or two.
MAX_CACHED_WORDS = 100_000


def default_bpe_path() -> Path:
    """The packaged merges file, OpenAI's bpe_simple_vocab_16e6.txt.gz."""
    return Path(__file__).resolve().parent / "assets" / "bpe_simple_vocab_16e6.txt.gz"


def bytes_to_unicode() -> dict[int, str]:
    """OpenAI's reversible byte -> printable character table (GPT-2's), in OpenAI's order.

    Printable Latin-1 bytes map to themselves; the other 68 bytes (controls, space, soft hyphen…)
    map to U+0100 onwards, so that no BPE symbol is whitespace or a control character.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in printable}
    shifted = (b for b in range(256) if b not in table)
    for offset, b in enumerate(shifted):
        table[b] = chr(256 + offset)
    return table


def read_merges(bpe_path: str | Path | None = None) -> list[tuple[str, str]]:
    """The first 48,894 merges of a gzipped OpenAI merges file (line 0 is a version header)."""
    path = Path(bpe_path) if bpe_path is not None else default_bpe_path()
    try:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            lines = f.read().split("\n")
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise ClipModuleError(f"{path}: cannot read a gzipped BPE merges file ({exc})") from None
    merges = [tuple(line.split()) for line in lines[1 : NUM_MERGES + 1]]
    if len(merges) != NUM_MERGES or any(len(pair) != 2 for pair in merges):
        raise ClipModuleError(f"{path}: expected {NUM_MERGES} merges of two symbols each after the header")
    return merges


def build_vocab(merges: list[tuple[str, str]]) -> dict[str, int]:
    """Token -> id exactly as OpenAI numbers them: bytes, bytes + '</w>', merges, SOT, EOT."""
    byte_chars = list(bytes_to_unicode().values())
    tokens = byte_chars + [c + "</w>" for c in byte_chars] + ["".join(pair) for pair in merges]
    tokens += [SOT_TOKEN, EOT_TOKEN]
    return {token: i for i, token in enumerate(tokens)}


def clean_text(text: str) -> str:
    """OpenAI's clean-up: ftfy.fix_text, html.unescape twice, whitespace collapse, lower-case."""
    if _is_plain_ascii(text):
        return " ".join(text.split()).lower()
    return _clean_text_full(text)


def _is_plain_ascii(text: str) -> bool:
    """True when ftfy and html.unescape would return `text` unchanged, found with C-level checks.

    On printable ASCII ftfy's mojibake fixer returns the text as is and every other fixer needs a
    non-ASCII or control character; entities need '&' followed by '#' or an alphanumeric, so an
    '&' before a space ("Tom & Jerry") is safe. Most alt-text passes; tests check the claim.
    """
    return text.isascii() and text.isprintable() and ("&" not in text or "&" not in text.replace("& ", ""))


def _clean_text_full(text: str) -> str:
    """The clean-up without the fast path (tests compare the two)."""
    text = html.unescape(html.unescape(ftfy.fix_text(text)))
    return " ".join(text.split()).lower()


def split_words(text: str) -> list[str]:
    """The words BPE runs on: `text` cleaned and cut as OpenAI's tokenizer cuts it."""
    if _is_plain_ascii(text):
        # Whitespace only separates words, so the fast path need not collapse it first.
        return _SPLIT_ASCII_WORDS.findall(text.lower())
    return _SPLIT_WORDS.findall(_clean_text_full(text))


def _build_word_bpe(vocab: dict[str, int], merges: list[tuple[str, str]]) -> Tokenizer:
    """Rust BPE over single words: UTF-8 bytes mapped to OpenAI's characters, '</w>' on the last."""
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, end_of_word_suffix="</w>"))
    # Each input is already one word, so the byte mapping must not split it or add a space.
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer


def _split_all(texts) -> list[list[str]]:
    """The words of every text; a non-str text (None, bytes, a number) is one line naming its position.

    The type check runs only after splitting failed, so the common path pays nothing for it."""
    if isinstance(texts, (bytes, bytearray)):
        raise ClipModuleError("cannot tokenize bytes: decode them to a str (or pass a list of str)")
    try:
        return [split_words(text) for text in texts]
    except (AttributeError, TypeError):
        if not hasattr(texts, "__iter__"):
            kind = type(texts).__name__
            raise ClipModuleError(f"cannot tokenize an object of type {kind}: pass a str or a list of str") from None
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                kind = type(text).__name__
                raise ClipModuleError(f"cannot tokenize text {i}: it is of type {kind}, not str") from None
        raise


class ClipTokenizer:
    """OpenAI's CLIP tokenizer. `tokenizer(texts)` gives the [N, 77] id tensor a CLIP text tower eats.

    Safe to share between threads: the word cache is only added to, and when full it is replaced
    by a fresh dict while callers holding the old one finish with it.
    """

    def __init__(self, bpe_path: str | Path | None = None, max_cached_words: int = MAX_CACHED_WORDS):
        merges = read_merges(bpe_path)
        vocab = build_vocab(merges)
        self._bpe = _build_word_bpe(vocab, merges)
        self.vocab_size = len(vocab)
        self.sot_token_id = vocab[SOT_TOKEN]
        self.eot_token_id = vocab[EOT_TOKEN]
        # OpenAI's BPE cache starts with the specials too: that is what makes them one id each.
        self._special_ids = {SOT_TOKEN: [self.sot_token_id], EOT_TOKEN: [self.eot_token_id]}
        self._word_ids = dict(self._special_ids)
        self._max_cached_words = max_cached_words

    def encode(self, text: str) -> list[int]:
        """BPE ids of the cleaned text, without SOT/EOT."""
        if not isinstance(text, str):
            raise ClipModuleError(f"cannot tokenize an object of type {type(text).__name__}: the text must be a str")
        words = split_words(text)
        return list(chain.from_iterable(map(self._word_ids_of([words]).__getitem__, words)))

    def decode(self, ids) -> str:
        """Text of `ids`, each end of word shown as a space, specials kept (OpenAI's decode)."""
        ids = ids.tolist() if hasattr(ids, "tolist") else list(ids)
        # Rust would skip an unknown id without a word; OpenAI's decode fails on it, and so do we.
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise ClipModuleError(f"cannot decode id {bad[0]}: ids run from 0 to {self.vocab_size - 1}")
        return self._bpe.decode(ids, skip_special_tokens=False).replace("</w>", " ")

    def __call__(
        self, texts: str | list[str], context_length: int = DEFAULT_CONTEXT_LENGTH, truncate: bool = True
    ) -> torch.Tensor:
        """[SOT] + ids + [EOT], zero padded to `context_length`: a LongTensor [N, context_length].

        A text too long keeps its first context_length - 2 ids and ends with EOT, as open_clip
        does; with truncate=False it raises ClipModuleError naming the text instead.
        """
        if isinstance(texts, str):
            texts = [texts]
        if context_length < 2:
            raise ClipModuleError(f"context_length must be at least 2 (for SOT and EOT), got {context_length}")
        word_lists = _split_all(texts)
        ids_of = self._word_ids_of(word_lists).__getitem__
        sot, eot = self.sot_token_id, self.eot_token_id
        rows = [[sot, *chain.from_iterable(map(ids_of, words)), eot] for words in word_lists]
        lengths = np.fromiter(map(len, rows), np.int64, len(rows))
        too_long = np.flatnonzero(lengths > context_length)
        if len(too_long) and not truncate:
            i = int(too_long[0])
            raise ClipModuleError(
                f"text {i} is {lengths[i]} tokens long with SOT/EOT, more than context_length "
                f"{context_length}; pass truncate=True to cut it"
            )
        return torch.from_numpy(self._pad(rows, lengths, context_length))

    def _word_ids_of(self, word_lists: list[list[str]]) -> dict[str, list[int]]:
        """A word -> ids dict holding every word of `word_lists`; unseen words go to Rust in one batch."""
        word_ids = self._word_ids
        if len(word_ids) > self._max_cached_words:
            word_ids = self._word_ids = dict(self._special_ids)
        unseen = list({word for words in word_lists for word in words if word not in word_ids})
        if unseen:
            encodings = self._bpe.encode_batch_fast(unseen, add_special_tokens=False)
            word_ids.update(zip(unseen, (e.ids for e in encodings)))
        return word_ids

    def _pad(self, rows: list[list[int]], lengths: np.ndarray, context_length: int) -> np.ndarray:
        """Rows cut to `context_length` (EOT last when cut) and zero padded, in a few numpy ops."""
        flat = np.fromiter(chain.from_iterable(rows), np.int64, int(lengths.sum()))
        starts = np.cumsum(lengths) - lengths
        positions = np.arange(context_length)
        keep = positions < lengths[:, None]
        out = np.zeros((len(rows), context_length), np.int64)
        out[keep] = flat[(starts[:, None] + positions)[keep]]
        out[lengths > context_length, -1] = self.eot_token_id
        return out


@functools.lru_cache(maxsize=1)
def default_tokenizer() -> ClipTokenizer:
    """The tokenizer on the packaged merges file, built once per process."""
    return ClipTokenizer()


def tokenize(
    texts: str | list[str], context_length: int = DEFAULT_CONTEXT_LENGTH, truncate: bool = False
) -> torch.Tensor:
    """OpenAI's `clip.tokenize`: a LongTensor [N, context_length]; too long raises unless truncate."""
    return default_tokenizer()(texts, context_length=context_length, truncate=truncate)


def write_hf_vocab_files(directory: str | Path, bpe_path: str | Path | None = None) -> tuple[Path, Path]:
    """Write HF-format `vocab.json` and `merges.txt`, generated from an OpenAI merges file.

    transformers' CLIPTokenizer builds from them offline; pass the two paths positionally
    (in transformers 5 the old keyword names are ignored and give a 2-token vocabulary).
    """
    merges = read_merges(bpe_path)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    vocab_path, merges_path = directory / "vocab.json", directory / "merges.txt"
    vocab_path.write_text(json.dumps(build_vocab(merges), ensure_ascii=False), encoding="utf-8")
    lines = ["#version: 0.2"] + [f"{a} {b}" for a, b in merges]
    merges_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return vocab_path, merges_path
