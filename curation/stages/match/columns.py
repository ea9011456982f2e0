"""What every matcher shares: many texts at once, and a column of query ids for a table."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import pyarrow as pa


def list_column(found: list[list[int]]) -> pa.ListArray:
    """Query ids per row as list<int32>, from flat offsets and values: pa.array() on a list of lists costs more
    than the matching itself."""
    offsets = np.zeros(len(found) + 1, dtype=np.int32)
    np.cumsum(np.fromiter(map(len, found), np.int32, len(found)), out=offsets[1:])
    values = np.fromiter(itertools.chain.from_iterable(found), np.int32, int(offsets[-1]))
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values))


class TermMatcher:
    """A matcher's batch methods; a rule subclasses it and gives `find` (and `num_terms`)."""

    num_terms: int

    def find(self, text: str) -> list[int]:
        raise NotImplementedError

    def find_many(self, texts: Sequence[str]) -> list[list[int]]:
        """`find` for each text."""
        return [self.find(text) for text in texts]

    def match_column(self, texts: pa.Array) -> pa.ListArray:
        """For a string column (no nulls), the sorted query indices of each row, as list<int32>."""
        return list_column([self.find(text) for text in texts.to_pylist()])

    def match_table(self, texts: pa.Array) -> tuple[pa.ListArray, dict[str, pa.Array]]:
        """The query ids of each row, and columns the matcher adds to its rows (worldwide: the language)."""
        return self.match_column(texts), {}
