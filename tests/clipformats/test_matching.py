"""The matching rule lives in the neutral layer: clipmodule's class-name counts equal curation's Matcher."""

from __future__ import annotations

import pytest

from clipformats.matching import count_matches
from curation.stages.match.matching import Matcher

TERMS = ["cat", "New York", "york", "c++", "école", "golden retriever", "t-shirt"]
TEXTS = ["A cat in new  york.", "cats and concat", "c++ code", "c++x", "École de Paris", "ecole", "Cat-like",
         "a Golden Retriever’s ball", "golden retrievers", "my T-Shirt", "t shirt", "NEW YORK CITY"]


def test_counts_equal_curations_matcher():
    matcher = Matcher(TERMS)
    expected = [sum(index in matcher.find(text) for text in TEXTS) for index in range(len(TERMS))]
    assert count_matches(TERMS, TEXTS) == expected == [2, 2, 2, 1, 1, 1, 1]


def test_a_blank_term_is_refused():
    with pytest.raises(ValueError, match="non-space character"):
        count_matches(["cat", "  "], TEXTS)
