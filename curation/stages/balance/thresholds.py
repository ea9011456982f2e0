"""Which t each query gets: the given t, t from the tail proportion (MetaCLIP's p_to_t), or one t per language
(MetaCLIP 2's `global_count`, `clipformats.balancing.language_thresholds`)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from clipformats.balancing import keep_probabilities, language_thresholds, p_to_t, t_to_p
from curation.config import BalanceConfig
from curation.errors import CurationError

ENGLISH = "en"


@dataclass(frozen=True)
class Thresholds:
    """t of every query, and how it was chosen (what the stats and the card report)."""

    t: int
    """The t of the whole list (per language: English's)."""
    tail_proportion: float | None
    """The proportion asked for (None: t was given)."""
    tail_proportion_at_t: float
    """The share of all matches (per language: English's) held by queries under t."""
    per_query: np.ndarray
    """t of each query id."""
    by_language: dict[str, int] = field(default_factory=dict)
    """t of each language (per_language only)."""

    def probabilities(self, counts: np.ndarray) -> np.ndarray:
        return keep_probabilities(counts, self.per_query)

    def stats(self) -> dict:
        return {"t": self.t, "tail_proportion": self.tail_proportion, "tail_proportion_at_t": self.tail_proportion_at_t,
                **({"t_per_language": self.by_language} if self.by_language else {})}


def _checked_t(t: int, where: str) -> int:
    if t < 1:
        raise CurationError(f"balance: the tail proportion gives t = {t} for {where}; give a larger tail_proportion")
    return t


def thresholds(config: BalanceConfig, counts_table: pa.Table, where: str) -> Thresholds:
    """Resolve `config`'s t against the match counts (`<matched>.counts.parquet`, named `where`)."""
    counts = counts_table["matched"].to_numpy().astype(np.int64)
    if not config.per_language:
        t = config.t if config.tail_proportion is None else \
            _checked_t(_p_to_t(counts, config.tail_proportion, where), where)
        return Thresholds(t, config.tail_proportion, t_to_p(counts, t), np.full(len(counts), t, dtype=np.int64))
    if "lang" not in counts_table.column_names:
        raise CurationError(f"{where}: no `lang` column, so balance.per_language has no languages (give "
                            f"queries.languages)")
    langs = counts_table["lang"].to_pylist()
    try:
        by_language, share = language_thresholds(counts, langs, config.t, config.tail_proportion, ENGLISH)
    except ValueError as error:
        raise CurationError(f"{where}: {error}") from None
    per_query = np.array([by_language[lang] for lang in langs], dtype=np.int64)
    return Thresholds(by_language[ENGLISH], config.tail_proportion, share, per_query, by_language)


def _p_to_t(counts: np.ndarray, proportion: float, where: str) -> int:
    try:
        return p_to_t(counts, proportion)
    except ValueError as error:
        raise CurationError(f"{where}: {error}") from None
