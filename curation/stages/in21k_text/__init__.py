"""`curation in21k_text`: DataComp's text-based filter: keep samples whose caption names an ImageNet-21k class
(any lemma of its 21,841 WordNet synsets), matched at word boundaries as `curation match` matches (case-insensitive).
Pair it with `language` (keep: [en]) for DataComp's baseline, which kept English captions only."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from curation.errors import CurationError
from curation.stage import HashCache
from curation.stages.sieve import Decide, content_hash, sieve_stage

TIMM_LEMMAS = "timm/data/_info/imagenet_synset_to_lemma.txt"
TIMM_SYNSETS = "timm/data/_info/imagenet21k_goog_synsets.txt"


@dataclass
class In21kTextConfig:
    """Where the class names come from."""

    classes: Path | None = None
    """Class names, one class a line: `<wnid><TAB>lemma, lemma, ...` or just `lemma, lemma, ...` (default: the
    ImageNet-21k synsets and lemmas that timm ships as package data)."""
    min_chars: int = 3
    """Class names shorter than this are not looked for (ImageNet-21k has `A`, `In`, `Be`: letters and chemical
    symbols that would match nearly every caption case-insensitively)."""
    skip_common: int = 200
    """Class names among wordfreq's most common English words (this many) are not looked for either (`one`,
    `will`, `can`, `may`)."""
    truth: Path | None = None
    """Parquet table (shard, key) of samples that should be dropped (planted): the stats report precision/recall."""

    def __post_init__(self) -> None:
        self.classes = Path(self.classes) if self.classes is not None else None
        self.truth = Path(self.truth) if self.truth is not None else None


@dataclass
class In21kTextPaths:
    shards: list[str] = field(default_factory=lambda: ["work/shards"])
    """Input shards: webdataset .tar files or folders of them."""
    out: Path = Path("work/in21k_text")
    """Folder for the kept samples' shards (same names); <out>.stats.json beside it."""
    overwrite: bool = False
    """Replace an output made with other settings (an up-to-date output is kept as it is)."""


def _lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise CurationError(f"{path}: cannot read class names ({error})") from None


def _timm_files() -> list[Path]:
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        timm = distribution("timm")
    except PackageNotFoundError:
        raise CurationError("in21k_text.classes: give a class-name file (timm, which ships ImageNet-21k's, "
                            "is not installed)") from None
    return [Path(timm.locate_file(TIMM_SYNSETS)), Path(timm.locate_file(TIMM_LEMMAS))]


def class_names(classes: Path | None) -> list[str]:
    """Every lemma of every class (ImageNet-21k's by default), underscores as spaces."""
    if classes is None:
        synsets, lemmas = _timm_files()
        wanted = set(_lines(synsets))
        lines = [line for line in _lines(lemmas) if line.split("\t")[0] in wanted]
    else:
        lines = _lines(classes)
    names = {name.strip().replace("_", " ") for line in lines for name in line.split("\t")[-1].split(",")}
    names.discard("")
    if not names:
        raise CurationError(f"{classes}: no class names")
    return sorted(names)


@dataclass(frozen=True)
class In21kTextSieve:
    config: In21kTextConfig
    name: str = "in21k_text"

    def build(self, shards: list[Path]) -> Decide:
        import wordfreq

        from curation.stages.match.matching import Matcher

        common = set(wordfreq.top_n_list("en", self.config.skip_common)) if self.config.skip_common else set()
        names = [n for n in class_names(self.config.classes)
                 if len(n) >= self.config.min_chars and n.lower() not in common]
        matcher = Matcher(names)

        def decide(meta: dict[str, Any], members: Any) -> str | None:
            return None if matcher.find(meta.get("caption") or "") else "no ImageNet-21k class"

        return decide

    def side_inputs(self, shards: list[Path], hashes: HashCache | None = None) -> dict[str, str | None]:
        classes = self.config.classes
        if classes is not None and not classes.is_file():
            raise CurationError(f"{classes}: no such class-name file")
        return {"classes": content_hash([classes] if classes is not None else _timm_files(), hashes)}


STAGE = sieve_stage("in21k_text", "keep samples whose caption names an ImageNet-21k class (DataComp's text filter)",
                    In21kTextPaths, In21kTextConfig, In21kTextSieve, "ImageNet-21k text filter",
                    "kept by the ImageNet-21k text filter")
