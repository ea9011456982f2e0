"""Text normalisation shared by the query list and the matcher, so both sides see the same characters
(defined in `clipformats.matching`, re-exported here).

`normalize`: lower-case (Python's str.lower), Unicode NFC, the typographic apostrophe ’ → ', control
characters and whitespace runs → one space, trimmed. A *word character* is a Unicode letter (L*),
combining mark (M*) or number (N*); marks count because they belong to the letter before them.
(Python rather than Arrow kernels: Arrow's NFC does not compose, apache/arrow#51225, and its regex
kernels compile their pattern on every call, which costs milliseconds per caption in `Matcher.find`.)
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

# The rule itself lives in the neutral layer, so that clipmodule's `eval concepts` counts class names as
# `curation match` counts queries (clipmodule may not import curation).
from clipformats.matching import LEFT, RIGHT, mark_boundaries, normalize, normalize_all

__all__ = ["LEFT", "RIGHT", "has_letter", "mark_boundaries", "normalize", "normalize_all"]


def has_letter(values: pa.Array) -> pa.Array:
    """Boolean mask: the text contains at least one letter (pure numbers and symbols make poor queries)."""
    return pc.match_substring_regex(values, r"\pL")
