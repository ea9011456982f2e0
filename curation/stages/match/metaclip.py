"""MetaCLIP's matching rule (`match.rule: metaclip` / `metaclip2`), exactly as its released code matches.

The caption is taken as written (no lower-casing, no Unicode normalisation), padded with a space at each end;
each of `, . ; : ? ! `` gets a space on either side and tab, newline and carriage return become spaces. A term
matches where `" " + term + " "` is a substring of that text (facebookresearch/MetaCLIP,
metaclip/metaclip1/substr_matching.py). `metaclip2` pads a term's end only when that end's character is not CJK,
Thai, Lao, Burmese, Khmer, Tibetan or punctuation (metaclip/curation/substr_matching.py, get_spaced_metadata), so
terms of scripts written without spaces match inside words; on other terms both rules agree.

So it is case-sensitive ("Cat" is not `cat`), a term next to a character outside that punctuation list does not
match ("cat's", "(cat)", "cat-like" do not contain `cat`), and every occurrence counts, overlapping or nested.
Duplicate terms all match (the reference returns every index whose entry is contained).
"""

from __future__ import annotations

import string
from collections.abc import Sequence

import ahocorasick

from curation.stages.match.columns import TermMatcher

WRAPPED = ",.;:?!`"
SPACED = "\t\n\r"
_SPACING = str.maketrans({**{c: f" {c} " for c in WRAPPED}, **dict.fromkeys(SPACED, " ")})

_EXTRA_PUNCTUATION = frozenset("，。、；：？！“”‘’（）【】《》〈〉「」『』～—")
_UNSPACED_RANGES = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F), (0x2B740, 0x2B81F),
                    (0x2B820, 0x2CEAF), (0x2CEB0, 0x2EBEF), (0xF900, 0xFAFF), (0x2E80, 0x2EFF), (0x2F00, 0x2FDF),
                    (0x2FF0, 0x2FFF), (0x0E00, 0x0E7F), (0x0E80, 0x0EFF), (0x1000, 0x109F), (0x1780, 0x17FF),
                    (0x0F00, 0x0FFF))


def spacing(text: str) -> str:
    """The caption as MetaCLIP's matcher sees it (its sequence of replacements in one pass: each replacement
    inserts only spaces, which no later one touches)."""
    return f" {text.translate(_SPACING)} "


def unspaced(char: str) -> bool:
    """MetaCLIP 2's `is_cjk_or_similar`: the term gets no space on this side."""
    code = ord(char)
    return (any(low <= code <= high for low, high in _UNSPACED_RANGES) or char in string.punctuation
            or char in _EXTRA_PUNCTUATION)


def spaced_term(term: str, rule: str) -> str:
    if rule == "metaclip":
        return f" {term} "
    return ("" if unspaced(term[0]) else " ") + term + ("" if unspaced(term[-1]) else " ")


class MetaClipMatcher(TermMatcher):
    """The words `Matcher`'s interface with MetaCLIP's rule; `rule` is `metaclip` (MetaCLIP 1) or `metaclip2`.

    >>> MetaClipMatcher(["cat", "New York", "york"]).find("A cat in New York.")
    [0, 1]
    """

    def __init__(self, terms: Sequence[str], rule: str = "metaclip"):
        if rule not in ("metaclip", "metaclip2"):
            raise ValueError(f"MetaClipMatcher: rule must be metaclip or metaclip2, got {rule!r}")
        terms = list(terms)
        if not all(isinstance(term, str) and term for term in terms):
            raise ValueError("MetaClipMatcher: every term must be a non-empty str")
        self.num_terms = len(terms)
        first: dict[str, int] = {}
        self._aliases: dict[int, list[int]] = {}
        self._automaton = ahocorasick.Automaton(ahocorasick.STORE_INTS)
        for index, term in enumerate(terms):
            key = spaced_term(term, rule)
            if key in first:
                self._aliases.setdefault(first[key], [first[key]]).append(index)
                continue
            first[key] = index
            self._automaton.add_word(key, index)
        self._automaton.make_automaton()

    def find(self, text: str) -> list[int]:
        """Sorted indices of the terms whose spaced form occurs in the spaced text."""
        found = {term for _, term in self._automaton.iter(spacing(text))}
        if self._aliases:
            for term in [t for t in found if t in self._aliases]:
                found.update(self._aliases[term])
        return sorted(found)
