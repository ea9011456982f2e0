"""Rule-based hard negative captions (NegCLIP, Yuksekgonul et al. 2210.01936): a caption changed so that its
words stay but its meaning does not, scored as extra text candidates for its image (the image->text direction).

Three rules, on the caption's words (WordNet says which are nouns and adjectives, `clipformats.wordnet`):
- "attributes": swap two adjectives that each stand before a noun ("a red cube and a blue ball" -> "a blue cube
  and a red ball");
- "relations": swap the noun phrases on either side of a spatial or action relation ("a dog on a sofa" -> "a sofa
  on a dog");
- "nouns": replace a noun by a co-hyponym of its most frequent sense ("a dog" -> "a wolf").

Each sample's negatives are a pure function of (caption, sample key, seed): the random choices come from a
generator seeded by a hash of the key, so workers, ranks and resumes give every sample the same negatives. A
caption where fewer than `count` negatives exist gets fewer; the missing ones are masked out of the loss.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from clipformats.wordnet import DEFAULT_DIR, Lexicon, WordNetError, read_lexicon
from clipmodule.errors import ClipModuleError

RULES = ("attributes", "relations", "nouns")
RELATIONS = ("in front of", "on top of", "next to", "to the left of", "to the right of", "on", "under", "above",
             "below", "behind", "beside", "near", "inside", "over", "holding", "riding", "carrying", "chasing",
             "eating", "wearing", "pushing", "pulling", "beneath", "against")
# function words WordNet also lists as nouns or adjectives ("a" is vitamin A, "in" an inch)
STOPWORDS = frozenset({"a", "an", "the", "this", "that", "these", "those", "some", "any", "each", "every", "no",
                       "one", "two", "three", "four", "five", "several", "many", "few", "its", "his", "her", "their",
                       "our", "my", "your", "and", "or", "but", "with", "of", "in", "on", "at", "to", "for", "from",
                       "by", "is", "are", "was", "were", "be", "been", "it", "he", "she", "they", "we", "you", "i",
                       "as"})
DETERMINERS = frozenset({"a", "an", "the", "this", "that", "these", "those", "some", "two", "three", "four", "five",
                         "several", "many", "few", "his", "her", "their", "its", "our", "my", "your"})
_WORD = re.compile(r"[A-Za-z]+")
_RELATIONS_BY_WORD: dict[str, list[list[str]]] = {}
for _relation in RELATIONS:
    _RELATIONS_BY_WORD.setdefault(_relation.split()[0], []).append(_relation.split())
_NOUNS_PER_WORD = 3  # co-hyponyms drawn per noun: enough choice, without one noun crowding out the other rules


@dataclass(frozen=True)
class HardNegativesConfig:
    """Hard negative captions added to each training sample as extra text candidates (`clipmodule.train.
    hard_negatives`)."""

    count: int = 1
    """Negatives per caption (fewer where the rules find fewer; the missing ones are masked)."""
    rules: tuple[str, ...] = RULES
    """Which rules: "attributes", "relations", "nouns"."""
    wordnet_dir: str = DEFAULT_DIR
    """The WordNet 3.0 database folder (Debian's wordnet-base)."""
    seed: int = 0


Word = tuple[str, int, int]  # (lower-case word, start, end) in the caption


def caption_words(caption: str) -> list[Word]:
    """The caption's words (letters only), lower case, with their spans: what every rule reads."""
    return [(match.group().lower(), match.start(), match.end()) for match in _WORD.finditer(caption)]


def _is_content(word: str, lexicon: Lexicon) -> bool:
    return word not in STOPWORDS and (word in lexicon.nouns or word in lexicon.adjectives)


def _swap(caption: str, first: tuple[int, int], second: tuple[int, int]) -> str:
    """`caption` with the two (start, end) spans exchanged (`first` before `second`)."""
    (a, b), (c, d) = first, second
    return caption[:a] + caption[c:d] + caption[b:c] + caption[a:b] + caption[d:]


def swapped_attributes(caption: str, words: list[Word], lexicon: Lexicon, rng: random.Random) -> list[str]:
    spots = [(start, end, word) for (word, start, end), (after, _, _) in zip(words, words[1:])
             if word in lexicon.adjectives and word not in STOPWORDS and after in lexicon.nouns
             and after not in STOPWORDS]
    return [_swap(caption, first[:2], second[:2]) for index, first in enumerate(spots) for second in spots[index + 1:]
            if first[2] != second[2]]


def _phrase_before(words: list[Word], end: int, lexicon: Lexicon) -> tuple[int, int] | None:
    start = end
    while start > 0 and _is_content(words[start - 1][0], lexicon):
        start -= 1
    return (words[start][1], words[end - 1][2]) if start < end else None


def _phrase_after(words: list[Word], start: int, lexicon: Lexicon) -> tuple[int, int] | None:
    while start < len(words) and words[start][0] in DETERMINERS:
        start += 1
    end = start
    while end < len(words) and _is_content(words[end][0], lexicon):
        end += 1
    return (words[start][1], words[end - 1][2]) if start < end else None


def swapped_relations(caption: str, words: list[Word], lexicon: Lexicon, rng: random.Random) -> list[str]:
    lowered = [word for word, _, _ in words]
    found = []
    for index in range(1, len(words)):
        for parts in _RELATIONS_BY_WORD.get(lowered[index], ()):
            if lowered[index:index + len(parts)] != parts:
                continue
            before = _phrase_before(words, index, lexicon)
            after = _phrase_after(words, index + len(parts), lexicon)
            if before and after and caption[slice(*before)].lower() != caption[slice(*after)].lower():
                found.append(_swap(caption, before, after))
    return found


def replaced_nouns(caption: str, words: list[Word], lexicon: Lexicon, rng: random.Random) -> list[str]:
    found = []
    for word, start, end in words:
        if word in STOPWORDS or word not in lexicon.nouns:
            continue
        options = lexicon.co_hyponyms(word)
        for other in rng.sample(options, min(_NOUNS_PER_WORD, len(options))):
            found.append(caption[:start] + other + caption[end:])
    return found


RULE_FUNCTIONS: dict[str, Callable[[str, list[Word], Lexicon, random.Random], list[str]]] = {
    "attributes": swapped_attributes, "relations": swapped_relations, "nouns": replaced_nouns}


def sample_rng(key: str, seed: int) -> random.Random:
    """A generator for one sample: seeded by a hash of (seed, key), not by any global state."""
    digest = hashlib.sha256(f"{seed}\x00{key}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "little"))


def hard_negatives(caption: str, key: str, config: HardNegativesConfig, lexicon: Lexicon) -> list[str]:
    """Up to `config.count` distinct negatives of `caption`, the rules taking turns in an order drawn per sample."""
    rng = sample_rng(key, config.seed)
    rules = list(config.rules)
    rng.shuffle(rules)
    pools, words = [], caption_words(caption)
    for rule in rules:
        candidates = [text for text in dict.fromkeys(RULE_FUNCTIONS[rule](caption, words, lexicon, rng))
                      if text.lower() != caption.lower()]
        rng.shuffle(candidates)
        pools.append(candidates)
    chosen: list[str] = []
    while len(chosen) < config.count and any(pools):
        for pool in pools:
            while pool and len(chosen) < config.count:
                text = pool.pop()
                if text not in chosen:
                    chosen.append(text)
                    break
    return chosen


class NegativeCaptions:
    """A training batch's negatives as tokens: `add(batch)` adds "negatives" ([B, K, context] token ids) and
    "negatives_present" ([B, K] booleans) from the batch's "caption" and "key" lists. The lexicon is read once, on
    first use (`load`); the tokenizer is the one the data uses."""

    def __init__(self, config: HardNegativesConfig):
        unknown = [rule for rule in config.rules if rule not in RULES]
        if unknown or not config.rules or config.count < 0:
            raise ClipModuleError(f"model.hard_negatives: rules {list(config.rules)} (choose from "
                                  f"{', '.join(RULES)}) and count {config.count} (0 or more)")
        self.config = config
        self.lexicon: Lexicon | None = None
        self.tokenizer: Callable[[list[str]], torch.Tensor] | None = None

    def load(self, tokenizer: Callable[[list[str]], torch.Tensor]) -> None:
        if self.lexicon is None:
            try:
                self.lexicon = read_lexicon(self.config.wordnet_dir)
            except WordNetError as error:
                raise ClipModuleError(f"model.hard_negatives.wordnet_dir: {error}") from None
        self.tokenizer = tokenizer

    def add(self, batch: dict[str, Any]) -> dict[str, Any]:
        captions, keys = batch.get("caption"), batch.get("key")
        if captions is None or keys is None:
            raise ClipModuleError("model.hard_negatives needs each training sample's caption and key in the batch "
                                  "(the data module's TokenizingCollate gives them)")
        count = self.config.count
        texts, present = [], []
        for caption, key in zip(captions, keys):
            found = hard_negatives(caption, str(key), self.config, self.lexicon)
            texts += found + [""] * (count - len(found))
            present.append([index < len(found) for index in range(count)])
        device = batch["text"].device
        tokens = self.tokenizer(texts) if texts else batch["text"].new_zeros(0, batch["text"].shape[1])
        return {**batch, "negatives": tokens.view(len(captions), count, tokens.shape[-1]).to(device),
                "negatives_present": torch.tensor(present, dtype=torch.bool, device=device).view(len(captions), count)}


def encode_with_negatives(model: torch.nn.Module, batch: dict[str, Any]) -> torch.Tensor:
    """The captions' features with their negatives' behind them, [B, 1 + K, D] (absent negatives zero), from one
    pass of the text tower over captions and negatives together."""
    text, tokens, present = batch["text"], batch["negatives"], batch["negatives_present"]
    rows, count = present.shape
    features = model.encode_text(torch.cat([text, tokens.flatten(0, 1)]), normalize=True)
    texts, negatives = features[:rows, None], features[rows:].view(rows, count, features.shape[-1])
    return torch.cat([texts, negatives * present[..., None].to(negatives.dtype)], dim=1)
