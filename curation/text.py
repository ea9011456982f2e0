"""Text normalisation shared by the query list and the matcher, so both sides see the same characters.

Everything runs as Arrow compute kernels over whole columns (utf8proc for case and normalisation, RE2 for
the character classes); Python never touches single characters. A *word character* is a Unicode letter
(L*), combining mark (M*) or number (N*); marks count because they belong to the letter before them.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

WORD_CLASS = r"\pL\pN\pM"
# Markers put around every non-word character by `mark_boundaries`: a left-edge marker where a term may
# start, a right-edge marker where one may end. Normalisation turns control characters into spaces, so
# neither marker nor the row separator can come from the text itself.
LEFT = "\x01"
RIGHT = "\x02"
ROW_SEPARATOR = "\x03"


def normalize(values: pa.Array) -> pa.Array:
    """Lower-case, NFC, typographic apostrophe → ', control characters and whitespace runs → one space, trim."""
    values = pc.utf8_lower(values)
    values = pc.utf8_normalize(values, form="NFC")
    values = pc.replace_substring(values, "\u2019", "'")
    values = pc.replace_substring_regex(values, r"[\s\p{Z}\p{Cc}]+", " ")
    return pc.utf8_trim(values, " ")


def mark_boundaries(values: pa.Array) -> pa.Array:
    """Surround each non-word character c by markers: c → RIGHT c LEFT (normalised text in).

    A term t matches text s at word boundaries exactly when LEFT + mark(t) + RIGHT occurs in
    LEFT + mark(s) + RIGHT: the left marker is there only after a non-word character (or at the start),
    the right marker only before one (or at the end), and inside the term the markers are the same on
    both sides. So a plain Aho-Corasick scan finds only boundary-respecting matches, with no per-hit check.
    """
    return pc.replace_substring_regex(values, rf"[^{WORD_CLASS}]", RIGHT + r"\0" + LEFT)


def has_letter(values: pa.Array) -> pa.Array:
    """Boolean mask: the text contains at least one letter (pure numbers and symbols make poor queries)."""
    return pc.match_substring_regex(values, r"\pL")
