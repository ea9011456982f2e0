"""The query-matching rule, shared by curation (its Aho-Corasick `Matcher`, which matches the queries of a dataset)
and clipmodule (`eval concepts`, which counts how many captions name each evaluated class): one definition, so a
count on either side means the same thing.

`normalize`: lower-case (Python's str.lower), Unicode NFC, the typographic apostrophe ’ → ', control
characters and whitespace runs → one space, trimmed. A *word character* is a Unicode letter (L*),
combining mark (M*) or number (N*); marks count because they belong to the letter before them.
A term matches a text where `boundary_key(term)` occurs in `boundary_key(text)`: at word boundaries, after both
are normalised (see `mark_boundaries`).
(Python rather than Arrow kernels: Arrow's NFC does not compose, apache/arrow#51225, and its regex
kernels compile their pattern on every call, which costs milliseconds per caption in `Matcher.find`.)
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Sequence

import regex

# Markers put around every non-word character by `mark_boundaries`: a left-edge marker where a term may
# start, a right-edge marker where one may end. Normalisation turns control characters into spaces, so
# no marker can come from the text itself.
LEFT = "\x01"
RIGHT = "\x02"

_CLEAN = dict.fromkeys((*range(0x20), *range(0x7F, 0xA0)), " ") | {0x2019: "'"}
_MARK_ASCII = {code: RIGHT + chr(code) + LEFT for code in range(0x80) if not chr(code).isalnum()}
_NON_ASCII_NON_WORD = regex.compile(r"[^\p{L}\p{M}\p{N}\x00-\x7f]")


def normalize(text: str) -> str:
    """Lower-case, NFC, ’ → ', control characters and whitespace runs → one space, trimmed."""
    text = text.lower()
    if not (text.isascii() and text.isprintable()):  # printable ASCII needs neither step
        text = unicodedata.normalize("NFC", text.translate(_CLEAN))
    return " ".join(text.split())


def normalize_all(texts: Iterable[str]) -> list[str]:
    return [normalize(text) for text in texts]


def mark_boundaries(text: str) -> str:
    """Surround each non-word character c of normalised text by markers: c → RIGHT c LEFT.

    A term t matches text s at word boundaries exactly when LEFT + mark(t) + RIGHT occurs in
    LEFT + mark(s) + RIGHT: the left marker is there only after a non-word character (or at the start),
    the right marker only before one (or at the end), and inside the term the markers are the same on
    both sides. So a plain Aho-Corasick scan finds only boundary-respecting matches, with no per-hit check.
    """
    text = text.translate(_MARK_ASCII)  # the common case at C speed; the regex only for non-ASCII text
    return text if text.isascii() else _NON_ASCII_NON_WORD.sub(RIGHT + r"\g<0>" + LEFT, text)


def boundary_key(text: str) -> str:
    """`text` normalised and marked, between the edge markers: what a term is looked for as, and in."""
    return LEFT + mark_boundaries(normalize(text)) + RIGHT


def count_matches(terms: Sequence[str], texts: Iterable[str]) -> list[int]:
    """For each term, how many of `texts` contain it by the rule above (each text counts once per term). A plain
    substring scan: right for a few thousand class names; curation's `Matcher` is the automaton for millions of
    queries."""
    keys = [boundary_key(term) for term in terms]
    if not all(key.strip(LEFT + RIGHT + " ") for key in keys):
        raise ValueError("count_matches: every term must contain a non-space character")
    counts = [0] * len(keys)
    for text in texts:
        marked = boundary_key(text)
        for index, key in enumerate(keys):
            if key in marked:
                counts[index] += 1
    return counts
