"""OpenAI's CLIP tokenizer: byte-level BPE over 49,408 tokens, run by the Rust `tokenizers` library.

The ids equal OpenAI's `clip.tokenize` and open_clip's `SimpleTokenizer`: the same merges file
(package data, MIT licence in assets/LICENSE-openai-clip.txt), the same vocabulary order, the same
clean-up (ftfy, HTML unescaping twice, whitespace collapse, lower-casing) and the same split regex.
Python only cleans the text; splitting, byte mapping, BPE, specials, truncation and padding run in Rust.
"""

from __future__ import annotations

import functools
import gzip
import html
import json
from itertools import chain
from pathlib import Path

import ftfy
import numpy as np
import torch
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors

from clipmodule.errors import ClipModuleError

SOT_TOKEN = "<|startoftext|>"
EOT_TOKEN = "<|endoftext|>"
DEFAULT_CONTEXT_LENGTH = 77
# OpenAI reads lines 1 .. 49152-256-2 of the merges file: 48,894 merges, so that 256 byte tokens,
# their 256 end-of-word twins, the merges and the 2 specials make 49,408 ids.
NUM_MERGES = 49152 - 256 - 2
# OpenAI's split regex. OpenAI compiles it with re.IGNORECASE, which on lower-cased text changes one
# thing: "'ſ" (long s) counts as the contraction "'s". Oniguruma's `(?i)` does the same but made encoding
# ~1.5x slower here, so SPLIT_PATTERN spells that case out instead; tests sweep every code point.
OPENAI_SPLIT_PATTERN = r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
SPLIT_PATTERN = r"""<\|[sſ]tartoftext\|>|<\|endoftext\|>|'[sſ]|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
# With IGNORECASE, Python's `regex` matches U+0345 (combining ypogegrammeni, which case-folds to a
# letter) with no branch, so OpenAI's findall drops it like whitespace; Oniguruma calls it a mark.
# Turning it into a space reproduces the drop: unmatched characters only ever separate tokens.
_DROPPED_BY_OPENAI_REGEX = "\u0345"
# Rust's BPE cache holds whole words; 10,000 (its default) is fewer than the distinct words of a
# day of captions, and every miss reruns the merges. 100k words is ~15 MB.
_BPE_CACHE_WORDS = 100_000


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
        lines = gzip.open(path, "rt", encoding="utf-8").read().split("\n")
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
    text = html.unescape(html.unescape(ftfy.fix_text(text))).replace(_DROPPED_BY_OPENAI_REGEX, " ")
    return " ".join(text.split()).lower()


def _build_rust_tokenizer(vocab: dict[str, int], merges: list[tuple[str, str]]) -> Tokenizer:
    """Split, byte mapping and BPE as OpenAI's; encodings come out as [SOT] + ids + [EOT]."""
    bpe = models.BPE(vocab=vocab, merges=merges, end_of_word_suffix="</w>", cache_capacity=_BPE_CACHE_WORDS)
    tokenizer = Tokenizer(bpe)
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            # invert=True + "removed": keep the regex matches, drop what lies between (findall).
            pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="removed", invert=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    # Added tokens are cut out before the split, so a literal "<|endoftext|>" in a caption becomes
    # id 49407, as in OpenAI's tokenizer (its BPE cache maps that whole regex match to the special).
    tokenizer.add_special_tokens([AddedToken(SOT_TOKEN, special=True), AddedToken(EOT_TOKEN, special=True)])
    sot, eot = vocab[SOT_TOKEN], vocab[EOT_TOKEN]
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{SOT_TOKEN} $A {EOT_TOKEN}", special_tokens=[(SOT_TOKEN, sot), (EOT_TOKEN, eot)]
    )
    return tokenizer


class ClipTokenizer:
    """OpenAI's CLIP tokenizer. `tokenizer(texts)` gives the [N, 77] id tensor a CLIP text tower eats."""

    def __init__(self, bpe_path: str | Path | None = None):
        merges = read_merges(bpe_path)
        self._vocab = build_vocab(merges)
        self._tokenizer = _build_rust_tokenizer(self._vocab, merges)
        self.vocab_size = len(self._vocab)
        self.sot_token_id = self._vocab[SOT_TOKEN]
        self.eot_token_id = self._vocab[EOT_TOKEN]

    def encode(self, text: str) -> list[int]:
        """BPE ids of the cleaned text, without SOT/EOT."""
        return self._tokenizer.encode(clean_text(text), add_special_tokens=False).ids

    def decode(self, ids) -> str:
        """Text of `ids`, each end of word shown as a space, specials kept (OpenAI's decode)."""
        ids = ids.tolist() if hasattr(ids, "tolist") else list(ids)
        return self._tokenizer.decode(ids, skip_special_tokens=False).replace("</w>", " ")

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
        # encode_batch_fast skips character offsets, which nothing here needs.
        rows = [e.ids for e in self._tokenizer.encode_batch_fast([clean_text(t) for t in texts])]
        lengths = np.fromiter(map(len, rows), np.int64, len(rows))
        too_long = np.flatnonzero(lengths > context_length)
        if len(too_long) and not truncate:
            i = int(too_long[0])
            raise ClipModuleError(
                f"text {i} is {lengths[i]} tokens long with SOT/EOT, more than context_length "
                f"{context_length}; pass truncate=True to cut it"
            )
        return torch.from_numpy(self._pad(rows, lengths, context_length))

    def _pad(self, rows: list[list[int]], lengths: np.ndarray, context_length: int) -> np.ndarray:
        """Rows cut to `context_length` (EOT last when cut) and zero padded, in a few numpy ops.

        Equal in speed to letting Rust pad and truncate (measured), and the lengths stay exact
        for the truncate=False error.
        """
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
