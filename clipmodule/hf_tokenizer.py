"""Tokenizers saved as Hugging Face `tokenizer.json` (SigLIP's sentencepiece vocabulary), read by `tokenizers`.

open_clip tokenizes these models with transformers' AutoTokenizer: clean the text (SigLIP: "canonicalize",
lower case without punctuation), encode, truncate to the context length keeping the end-of-sequence token, pad
with the pad token (on the side `tokenizer_config.json` names: Gemma's, SigLIP 2's, is the left), and for CLIPA's
BERT vocabulary (`strip_sep_token`) the separator replaced by 0. This does the same with the Rust `tokenizers`
library alone (a core dependency).
"""

from __future__ import annotations

import html
import json
import string
from pathlib import Path

import ftfy
import torch

from clipmodule.errors import ClipModuleError

CLEANERS = ("canonicalize", "lower", "whitespace")
LEFT_PADDING_CLASSES = ("GemmaTokenizer", "GemmaTokenizerFast")
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def clean_text(text: str, mode: str) -> str:
    """open_clip's cleaning: fix mojibake and HTML entities, collapse whitespace; "lower" and "canonicalize"
    (big_vision's: underscores to spaces, punctuation removed) also lower-case."""
    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    if mode == "canonicalize":
        text = text.replace("_", " ").translate(_PUNCTUATION).lower()
    elif mode == "lower":
        text = text.lower()
    return " ".join(text.split())


class HFTokenizer:
    """`tokenizer(texts)` -> [N, context_length] ids, as open_clip's HFTokenizer gives for the same files."""

    def __init__(self, folder: str | Path, context_length: int, clean: str = "whitespace", strip_sep: bool = False):
        from tokenizers import Tokenizer

        folder = Path(folder)
        if clean not in CLEANERS:
            raise ClipModuleError(f"tokenizer clean mode {clean!r} is not one of {', '.join(CLEANERS)}")
        if not (folder / "tokenizer.json").is_file():
            raise ClipModuleError(f"{folder}: no tokenizer.json (save the tokenizer with save_pretrained)")
        try:
            self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        except Exception as error:  # tokenizers raises its own Exception type for a malformed file
            raise ClipModuleError(f"{folder / 'tokenizer.json'}: unreadable tokenizer ({str(error)[:120]})") from None
        pad_token = _special_token(folder, "pad_token", "<pad>")
        self.pad_id = self.tokenizer.token_to_id(pad_token)
        if self.pad_id is None:
            raise ClipModuleError(f"{folder}: pad token {pad_token!r} is not in the vocabulary")
        self.sep_id = self.tokenizer.token_to_id(_special_token(folder, "sep_token", "[SEP]")) if strip_sep else None
        if strip_sep and self.sep_id is None:
            raise ClipModuleError(f"{folder}: strip_sep_token is set but the vocabulary has no separator token")
        # transformers' rule: the config's padding_side, else the class's own (Gemma's tokenizer pads on the left)
        default_side = "left" if _special_token(folder, "tokenizer_class", "") in LEFT_PADDING_CLASSES else "right"
        self.pad_left = _special_token(folder, "padding_side", default_side) == "left"
        self.context_length, self.clean = context_length, clean
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length=context_length)  # special tokens (</s>) are kept

    def __call__(self, texts: str | list[str], context_length: int | None = None) -> torch.Tensor:
        texts = [texts] if isinstance(texts, str) else texts
        if not isinstance(texts, list | tuple) or not all(isinstance(text, str) for text in texts):
            raise ClipModuleError("texts must be a str or a list of str")
        length = context_length or self.context_length
        if length != self.context_length:
            self.tokenizer.enable_truncation(max_length=length)
        encodings = self.tokenizer.encode_batch([clean_text(text, self.clean) for text in texts])
        if length != self.context_length:
            self.tokenizer.enable_truncation(max_length=self.context_length)
        out = torch.full((len(texts), length), self.pad_id, dtype=torch.long)
        for row, encoding in enumerate(encodings):
            ids = torch.tensor(encoding.ids, dtype=torch.long)
            if self.pad_left:
                out[row, length - len(ids):] = ids
            else:
                out[row, : len(ids)] = ids
        if self.sep_id is not None:
            out[out == self.sep_id] = 0  # open_clip's strip_sep_token writes 0, whatever the pad id
        return out


def _special_token(folder: Path, key: str, default: str) -> str:
    """A setting as transformers reads it (the pad or separator token, the padding side): tokenizer_config.json,
    else special_tokens_map.json, else `default`."""
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        path = folder / name
        if path.is_file():
            try:
                pad = json.loads(path.read_text()).get(key)
            except (json.JSONDecodeError, AttributeError):
                raise ClipModuleError(f"{path}: malformed JSON") from None
            if isinstance(pad, dict):
                pad = pad.get("content")
            if isinstance(pad, str):
                return pad
    return default
