"""Worldwide matching (MetaCLIP 2): each caption's language is identified, and the caption is matched only against
the queries of that language (one automaton per language); a caption in a language without queries matches
nothing. The query list says each term's language in its `lang` column (`queries.languages`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pyarrow as pa

from curation.stages.match.columns import TermMatcher, list_column
from curation.stages.match.languages import LanguageIdentifier


class WorldwideMatcher(TermMatcher):
    """Per-language matchers over one query list; ids are the list's own."""

    def __init__(self, terms: Sequence[str], langs: Sequence[str], make: Callable[[list[str]], TermMatcher]):
        self.num_terms = len(terms)
        self._matchers: dict[str, tuple[TermMatcher, np.ndarray]] = {}
        langs = np.asarray(list(langs), dtype=object)
        for lang in sorted(set(langs.tolist())):
            ids = np.flatnonzero(langs == lang)
            self._matchers[lang] = (make([terms[i] for i in ids]), ids)
        self._identifier = LanguageIdentifier()

    def find_in(self, text: str, lang: str) -> list[int]:
        if lang not in self._matchers:
            return []
        matcher, ids = self._matchers[lang]
        return [int(ids[i]) for i in matcher.find(text)]

    def find(self, text: str) -> list[int]:
        langs, _ = self._identifier.identify([text])
        return self.find_in(text, langs[0])

    def match_table(self, texts: pa.Array) -> tuple[pa.ListArray, dict[str, pa.Array]]:
        captions = texts.to_pylist()
        langs, scores = self._identifier.identify(captions)
        found = [sorted(self.find_in(text, lang)) for text, lang in zip(captions, langs, strict=True)]
        return (list_column(found),
                {"lang": pa.array(langs, pa.string()), "lang_score": pa.array(scores, pa.float32())})
