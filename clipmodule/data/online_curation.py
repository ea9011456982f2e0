"""Online curation (MetaCLIP 2): train on the *matched*, unbalanced shards and draw each epoch's balanced subset
in the loader. A sample is in epoch e's subset when `curation balance` with seed `seed + e` would keep its row:
the same rule and coins (`clipformats.balancing`), decided from the sample's json (its row key, `url` by default,
and its `query_ids`, which `curation download` stores with `save_columns: [query_ids]`) and the match counts.

So each epoch sees a fresh draw (head queries' rows rotate, tail rows stay), and a resumed epoch makes the same
decisions: they depend on nothing but the sample, the counts and the epoch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from clipformats.balancing import coins, keep_probabilities, key_hashes, language_thresholds, p_to_t
from clipformats.curation_outputs import ROWS_IDENTITY, recorded_identity
from clipformats.files import sha256_file
from clipmodule.data.remote import is_remote
from clipmodule.errors import ClipModuleError


@dataclass
class OnlineCuration:
    """`data.curation`: the balanced subset drawn afresh each epoch from matched (unbalanced) shards."""

    counts: str
    """`<matched>.counts.parquet` written by `curation match` (rows per query of the unbalanced pool)."""
    t: int | None = None
    """Rows kept per query in expectation, at most (default 20,000 unless tail_proportion is given)."""
    tail_proportion: float | None = None
    """Instead of t: the share of matches the tail (queries under t) holds (MetaCLIP's p_to_t)."""
    seed: int = 0
    """Epoch e draws as `curation balance --seed <seed + e>` would."""
    per_language: bool = False
    """MetaCLIP 2's per-language t (`balance.per_language`; the counts need their query list's `lang` column)."""
    key_field: str = "url"
    """The sample json's field identifying the row (curation balance's key_column)."""
    verify: bool = True
    """Refuse training shards whose recorded origin (`rows_identity` in `<shards>.stats.json`, written by
    `curation download --from_matched` and passed on by the filter stages) is not the matched output these counts
    count: shards of a balanced output would be balanced twice. false: shards copied without their stats."""


class EpochSelection:
    """Which samples belong to an epoch's balanced subset (built once, in the main process; picklable)."""

    def __init__(self, config: OnlineCuration):
        import pyarrow.parquet as pq

        if config.t is not None and config.tail_proportion is not None:
            raise ClipModuleError("data.curation: give t or tail_proportion, not both")
        try:
            table = pq.read_table(config.counts, columns=["matched", *(["lang"] if config.per_language else [])])
        except (OSError, KeyError, ValueError) as error:
            raise ClipModuleError(f"{config.counts}: not a match counts table with the columns data.curation reads "
                                  f"({error})") from None
        counts, t = table["matched"].to_numpy(), 20_000 if config.t is None and config.tail_proportion is None \
            else config.t
        self.by_language: dict[str, int] = {}
        if config.per_language:
            try:
                self.by_language, _ = language_thresholds(counts, table["lang"].to_pylist(), t, config.tail_proportion)
            except ValueError as error:
                raise ClipModuleError(f"{config.counts}: {error}") from None
            per_query = np.array([self.by_language[lang] for lang in table["lang"].to_pylist()], dtype=np.int64)
            self.t = self.by_language.get("en", 0)
        else:
            self.t = p_to_t(counts, config.tail_proportion) if config.tail_proportion is not None else t
            per_query = self.t
        if np.min(per_query) < 1:
            raise ClipModuleError(f"data.curation: t must be >= 1, got {self.t}")
        self.probabilities = keep_probabilities(counts, per_query)
        self.seed, self.key_field, self.counts = config.seed, config.key_field, str(Path(config.counts))
        self.counts_sha256 = sha256_file(config.counts)  # a resume needs these counts, not only their path
        metadata = pq.read_schema(config.counts).metadata or {}
        self.rows_identity = metadata.get(ROWS_IDENTITY.encode(), b"").decode() or None
        if self.rows_identity is None and Path(config.counts).name.endswith(".counts.parquet"):
            # counts of a match made before it recorded an identity: its stats hold it once match ran again
            self.rows_identity = recorded_identity(Path(str(config.counts)[: -len(".counts.parquet")]),
                                                   stage="match")
        self.verify = config.verify

    def check_origin(self, folders: list[Path | str]) -> None:
        """Refuses (one line) shard folders that are not downloads of the matched output these counts count."""
        if not self.verify:
            return
        for folder in folders:
            if is_remote(str(folder)):
                raise ClipModuleError(f"{folder}: online curation cannot check the origin of remote shards (it reads "
                                      f"{ROWS_IDENTITY} from the local <shards>.stats.json of a download); if these "
                                      f"are the download of the matched output {self.counts} counts, vouch for them "
                                      "with data.curation.verify: false")
            recorded = recorded_identity(folder)
            if self.rows_identity is None:
                raise ClipModuleError(f"{self.counts}: records no identity of the matched output it counts (made "
                                      "before `curation match` recorded one): run the same `curation match` again "
                                      "(an up-to-date output gains it), or set data.curation.verify: false")
            if recorded is None:
                raise ClipModuleError(f"{folder}: no recorded origin ({ROWS_IDENTITY} in {folder}.stats.json); online "
                                      f"curation reads shards downloaded from the matched output that {self.counts} "
                                      "counts (`curation download --from_matched`; a filter stage's output made before "
                                      "it passed the origin on gains it when that stage runs again), or set "
                                      "data.curation.verify: false")
            if recorded != self.rows_identity:
                raise ClipModuleError(f"{folder}: these shards hold other rows than the matched output {self.counts} "
                                      f"counts (rows identity {recorded[:12]}, counts' {self.rows_identity[:12]}): "
                                      "shards of a balanced output would be balanced a second time; download the "
                                      "matched output (`curation download --from_matched`)")

    def keep(self, key: str, fields: dict[str, bytes], epoch: int) -> bool:
        """Whether sample `key` (its tar fields) is in epoch `epoch`'s subset."""
        try:
            meta = json.loads(fields["json"])
            row, ids = str(meta[self.key_field]), np.asarray(meta["query_ids"], dtype=np.int64)
        except (KeyError, ValueError, TypeError):
            raise ClipModuleError(f"sample {key}: no {self.key_field!r} and 'query_ids' in its json (online curation "
                                  "reads shards downloaded with save_columns: [query_ids])") from None
        if ids.size and (ids.min() < 0 or ids.max() >= len(self.probabilities)):
            raise ClipModuleError(f"sample {key}: query ids beyond the query list of {self.counts}")
        hashes = np.repeat(key_hashes([row]), ids.size)
        return bool(np.any(coins(hashes, ids, self.seed + epoch) < self.probabilities[ids]))

    def record(self) -> dict[str, Any]:
        """What a checkpoint notes, so a resume with other curation settings is refused."""
        return {"counts": self.counts, "counts_sha256": self.counts_sha256, "t": int(self.t), "seed": self.seed,
                "key_field": self.key_field,
                **({"t_per_language": self.by_language} if self.by_language else {})}


def shard_folders(sources: list[Any]) -> list[Path | str]:
    """The folders the training sources' shards lie in (a table source: its file), each once, in order (a remote
    shard's: its URL up to the last slash)."""
    found: list[Path | str] = [str(path).rsplit("/", 1)[0] if is_remote(str(path)) else Path(path).parent
                               for source in sources for path in source.shards]
    found += [Path(source.table.source) for source in sources if not source.shards and source.table is not None]
    return list(dict.fromkeys(found))
