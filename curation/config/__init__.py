"""Typed settings of each curation stage and of a whole dataset build (`curation build -c <dataset>.yaml`).

The attribute docstrings are the documentation: `curation <stage> --help` shows them, and the YAML keys
of a dataset config are these field names. Values are checked when a config is created (`__post_init__`).
This module imports nothing heavy, so the CLI can build its parser quickly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from clipformats.images import MAX_IMAGE_PIXELS
from curation.config.checks import require as _require
from curation.config.download import ENCODE_QUALITY as ENCODE_QUALITY
from curation.config.download import DownloadConfig as DownloadConfig


@dataclass
class QueriesConfig:
    """Where the query list comes from, and how it is cut."""

    wordnet: bool = True
    """Add the lemmas of every WordNet synset."""
    wordnet_dir: Path = Path("/usr/share/wordnet")
    """Folder with the WordNet 3.0 database files data.{noun,verb,adj,adv} (Debian package wordnet-base)."""
    unigrams: Literal["auto", "corpus", "wordfreq", "none"] = "auto"
    """Unigram counts: `corpus` counts words of `corpus`; `wordfreq` estimates counts from the wordfreq
    package's English frequencies (offline); `auto`: corpus when one is given, else wordfreq."""
    corpus: list[str] = field(default_factory=list)
    """Text corpus for unigram and bigram counts: txt (a document per line), jsonl or parquet files."""
    corpus_field: str = "text"
    """Column holding the text in jsonl/parquet corpus files."""
    min_count: int = 100
    """Keep unigrams seen at least this often (the CLIP paper: 100 times in English Wikipedia)."""
    wordfreq_corpus_words: int = 3_000_000_000
    """Corpus size assumed when turning wordfreq frequencies into counts (about English Wikipedia's)."""
    bigrams: bool = True
    """Add corpus bigrams with high pointwise mutual information (only with a corpus)."""
    bigram_min_count: int = 100
    """Keep bigrams seen at least this often (PMI of rare pairs is noise)."""
    min_pmi: float = 5.0
    """Keep bigrams with PMI = ln(p(a b) / (p(a) p(b))) at least this."""
    titles: str | None = None
    """Titles to add (e.g. Wikipedia article titles): txt (one per line) or a table with `title_column`."""
    title_column: str = "title"
    """Column of `titles` holding the title."""
    views_column: str = "views"
    """Column of `titles` holding a view count; needed when `min_views` > 0."""
    min_views: int = 0
    """Keep titles viewed at least this often."""
    title_language_column: str = "lang"
    """With `languages`: the column of a `titles` table naming each title's language (lid.176/wordfreq codes);
    a title joins its language's list (no value: English's). Without the column every title is English's."""
    max_terms: int = 500_000
    """Cap on the list: terms are ranked by source (unigram, bigram, title, wordnet), then by count."""
    languages: list[str] = field(default_factory=list)
    """Worldwide curation (MetaCLIP 2): languages besides English (wordfreq's codes: de, fr, es, ja, zh, ...) whose
    wordfreq words (same min_count and max_terms) join the list; every term then carries its language in a `lang`
    column, and `match` identifies each caption's language and matches it against that language's terms only."""

    def __post_init__(self) -> None:
        self.wordnet_dir = Path(self.wordnet_dir)
        _require(self.min_count >= 1, f"queries.min_count must be >= 1, got {self.min_count}")
        _require(self.bigram_min_count >= 1, f"queries.bigram_min_count must be >= 1, got {self.bigram_min_count}")
        _require(self.max_terms >= 1, f"queries.max_terms must be >= 1, got {self.max_terms}")
        _require(self.wordfreq_corpus_words >= 1, "queries.wordfreq_corpus_words must be >= 1")
        _require(self.min_views >= 0, f"queries.min_views must be >= 0, got {self.min_views}")
        _require(self.unigrams != "corpus" or bool(self.corpus), "queries.unigrams is 'corpus' but no corpus is given")


@dataclass(kw_only=True)
class EngineOptions:
    """Where a stage's shard jobs run (`curation.engines`): the same output either way."""

    engine: Literal["local", "ray"] = "local"
    """local: worker processes on this machine; ray: Ray Data actors on a Ray cluster (same output)."""
    ray_address: str | None = None
    """Ray cluster to use with engine ray (host:port, ray://host:port or auto); none: start a local Ray."""


@dataclass
class MatchConfig(EngineOptions):
    """How caption tables are read and matched against the query list."""

    rule: Literal["words", "metaclip", "metaclip2"] = "words"
    """How a caption contains a query. words: case-insensitive, at word boundaries (`curation.stages.match.matching`);
    metaclip: MetaCLIP's released matcher, a case-sensitive substring match of " query " in the caption with
    spaces around , . ; : ? ! ` (`curation.stages.match.metaclip`); metaclip2: MetaCLIP 2's, which leaves the space
    off a query's end in scripts written without spaces."""
    url_column: str = "url"
    """Column with the image URL (renamed to `url` in the output)."""
    caption_column: str = "caption"
    """Column with the caption (renamed to `caption` in the output)."""
    column_names: list[str] | None = None
    """Column names for csv/tsv files without a header line (CC3M's TSV: [caption, url])."""
    workers: int = 0
    """Processes matching shards in parallel (0: one per CPU core, at most one per input file)."""
    batch_rows: int = 65536
    """Rows matched per batch; bounds memory per worker."""
    allow_schemes: list[str] = field(default_factory=list)
    """URL schemes kept besides http and https (e.g. file: then local files become samples). Rows with other
    schemes or malformed URLs are dropped and counted by reason in the stats."""

    def __post_init__(self) -> None:
        _require(self.workers >= 0, f"match.workers must be >= 0, got {self.workers}")
        _require(self.batch_rows >= 1, f"match.batch_rows must be >= 1, got {self.batch_rows}")


@dataclass
class BalanceConfig(EngineOptions):
    """t-capped sampling: each row is kept if, for any of its queries q, a coin with p = min(1, t/count[q]) comes up."""

    t: int | None = None
    """Expected number of rows kept per query, at most (the CLIP paper: 20,000, the default unless
    tail_proportion is given; MetaCLIP: 170,000 on its 1.6B pool)."""
    tail_proportion: float | None = None
    """Instead of t: the share of all matches that the tail (queries under t) should hold; t is then the count
    where the ascending counts' cumulative share is nearest it (MetaCLIP's p_to_t). Not with t."""
    per_language: bool = False
    """MetaCLIP 2's worldwide rule: each language's queries get their own t, the one whose tail holds the same
    share of that language's matches as English's tail at t (or as tail_proportion). Needs a query list with
    a `lang` column (`queries.languages`)."""
    seed: int = 0
    """Seed of the coins, in [0, 2**64); each coin is a hash of (row key, query, seed)."""
    key_column: str = "url"
    """Column whose value identifies a row (the hash input)."""
    workers: int = 0
    """Processes balancing shards in parallel (0: one per CPU core); the output does not depend on it."""

    def __post_init__(self) -> None:
        _require(self.t is None or self.tail_proportion is None, "balance: give t or tail_proportion, not both")
        if self.t is None and self.tail_proportion is None:
            self.t = 20_000
        _require(self.t is None or self.t >= 1, f"balance.t must be >= 1, got {self.t}")
        _require(self.tail_proportion is None or 0.0 < self.tail_proportion < 1.0,
                 f"balance.tail_proportion must be in (0, 1), got {self.tail_proportion}")
        # the coins mix a 64-bit seed: a larger one would silently equal another (2**64 would be seed 0)
        _require(0 <= self.seed < 2**64, f"balance.seed must be in [0, 2**64), got {self.seed}")
        _require(self.workers >= 0, f"balance.workers must be >= 0, got {self.workers}")


@dataclass
class DecontaminateConfig:
    """Near-duplicates of evaluation images in the training shards, found by perceptual hash and dropped."""

    hash: Literal["phash", "dhash", "whash", "average_hash"] = "phash"
    """imagehash function: phash (DCT; robust to resizing and re-encoding), dhash, whash or average_hash."""
    hash_size: int = 8
    """Side of the hash grid: hash_size² bits (8 → 64-bit hashes)."""
    threshold: int = 10
    """Drop a training sample whose hash is within this Hamming distance of an evaluation image's."""
    workers: int = 0
    """Processes hashing training shards in parallel (0: one per CPU core)."""
    thumbnails: int = 12
    """Closest matches shown (evaluation image beside training image) in the PNG next to the output."""
    max_image_pixels: int = MAX_IMAGE_PIXELS
    """Images whose header says width x height is over this are not decoded (an evaluation image: an error;
    a training sample: kept and counted, like an undecodable one)."""
    eval_embeddings: list[str] = field(default_factory=list)
    """The embedding pass: embedding folders of the evaluation sets (`curation embed` of their tars). A training
    sample whose image embedding (from the training embeddings) has at least embedding_threshold cosine with
    one of theirs is dropped too (catches crops, flips and edits the hash misses)."""
    embedding_threshold: float = 0.9
    """Cosine at or above which a training image counts as a copy of an evaluation image (embedding pass)."""
    truth: Path | None = None
    """Parquet table (shard, key) of training samples known to be evaluation copies (planted); the stats then
    report precision and recall against it."""

    def __post_init__(self) -> None:
        self.truth = Path(self.truth) if self.truth is not None else None
        _require(-1.0 <= self.embedding_threshold <= 1.0,
                 f"decontaminate.embedding_threshold must be in [-1, 1], got {self.embedding_threshold}")
        _require(2 <= self.hash_size <= 32, f"decontaminate.hash_size must be in 2..32, got {self.hash_size}")
        _require(0 <= self.threshold < self.hash_size ** 2,
                 f"decontaminate.threshold must be in 0..{self.hash_size ** 2 - 1}, got {self.threshold}")
        _require(self.workers >= 0, f"decontaminate.workers must be >= 0, got {self.workers}")
        _require(self.thumbnails >= 0, f"decontaminate.thumbnails must be >= 0, got {self.thumbnails}")
        _require(self.max_image_pixels >= 1,
                 f"decontaminate.max_image_pixels must be >= 1, got {self.max_image_pixels}")


@dataclass
class FilterConfig:
    """Which samples `curation filter` keeps: DataComp's CLIP-score, basic and image-based baselines. A sample is
    kept when it passes every filter that is on; a dropped one is counted under the first it fails, in the
    order caption words, caption characters, image side, aspect ratio, CLIP score, image cluster."""

    clip_score_threshold: float | None = None
    """Keep samples whose CLIP score (cosine of image and caption embedding) is at least this (DataComp: 0.3
    for ViT-L/14). At most one of this and clip_score_fraction."""
    clip_score_fraction: float | None = None
    """Keep the top fraction of all input samples by CLIP score: exactly floor(fraction x samples) of them,
    ties broken by (shard, key) (DataComp's best: 0.3)."""
    min_caption_words: int = 0
    """Keep captions of at least this many whitespace-separated words (DataComp's basic filter: 3)."""
    min_caption_chars: int = 0
    """Keep captions of at least this many characters (DataComp's basic filter: 6)."""
    min_image_side: int = 0
    """Keep images whose shorter original side (the shard json's original_width/height, else width/height) is
    at least this many pixels (DataComp's basic filter: 200); a sample without sides fails it."""
    max_aspect_ratio: float | None = None
    """Keep images whose longer/shorter original side is at most this (DataComp's basic filter: 3.0)."""
    image_clusters: int = 0
    """Image-based clustering (DataComp's ImageNet-cluster baseline): k-means of the input images into this
    many clusters; keep samples whose nearest centre is the nearest centre of some target embedding (0: off)."""
    target_embeddings: Path | None = None
    """Embedding folder of the target set (e.g. ImageNet's training images, `curation embed`); needed with
    image_clusters."""
    seed: int = 0
    """Seed of the k-means initialisation."""
    kmeans_iterations: int = 20
    """Lloyd iterations of the k-means (DataComp: 20)."""
    kmeans_backend: Literal["auto", "numpy", "faiss"] = "auto"
    """k-means implementation: faiss-cpu when installed (auto), or numpy."""

    def __post_init__(self) -> None:
        self.target_embeddings = Path(self.target_embeddings) if self.target_embeddings is not None else None
        _require(self.clip_score_threshold is None or self.clip_score_fraction is None,
                 "filter: give clip_score_threshold or clip_score_fraction, not both")
        _require(self.clip_score_threshold is None or -1.0 <= self.clip_score_threshold <= 1.0,
                 f"filter.clip_score_threshold must be in [-1, 1], got {self.clip_score_threshold}")
        _require(self.clip_score_fraction is None or 0.0 < self.clip_score_fraction <= 1.0,
                 f"filter.clip_score_fraction must be in (0, 1], got {self.clip_score_fraction}")
        for name in ("min_caption_words", "min_caption_chars", "min_image_side", "image_clusters"):
            _require(getattr(self, name) >= 0, f"filter.{name} must be >= 0, got {getattr(self, name)}")
        _require(self.max_aspect_ratio is None or self.max_aspect_ratio >= 1.0,
                 f"filter.max_aspect_ratio must be >= 1, got {self.max_aspect_ratio}")
        _require(self.kmeans_iterations >= 1, f"filter.kmeans_iterations must be >= 1, got {self.kmeans_iterations}")
        _require((self.image_clusters > 0) == (self.target_embeddings is not None),
                 "filter: image_clusters and target_embeddings go together (give both or neither)")


@dataclass
class DedupConfig:
    """SemDeDup: k-means clusters of the image embeddings, then within each cluster a sample whose cosine with
    an earlier one (by shard and key, kept or not) is above a threshold is dropped."""

    threshold: float = 0.95
    """A sample whose image embedding has a cosine above this with an earlier one is dropped (SemDeDup's
    1 - eps)."""
    clusters: int = 0
    """k-means clusters (0: the square root of the samples, rounded up); duplicates in different clusters are
    not compared."""
    seed: int = 0
    """Seed of the k-means initialisation."""
    kmeans_iterations: int = 20
    """Lloyd iterations of the k-means."""
    kmeans_backend: Literal["auto", "numpy", "faiss"] = "auto"
    """k-means implementation: faiss-cpu when installed (auto), or numpy."""
    thumbnails: int = 12
    """Closest pairs shown (kept sample beside dropped one) in the PNG beside the output."""
    truth: Path | None = None
    """Parquet table (shard, key) of samples known to be duplicates that should go (planted copies); the stats
    then report precision and recall against it."""

    def __post_init__(self) -> None:
        self.truth = Path(self.truth) if self.truth is not None else None
        _require(-1.0 <= self.threshold <= 1.0, f"dedup.threshold must be in [-1, 1], got {self.threshold}")
        _require(self.clusters >= 0, f"dedup.clusters must be >= 0, got {self.clusters}")
        _require(self.kmeans_iterations >= 1, f"dedup.kmeans_iterations must be >= 1, got {self.kmeans_iterations}")
        _require(self.thumbnails >= 0, f"dedup.thumbnails must be >= 0, got {self.thumbnails}")


@dataclass
class EmbedConfig(EngineOptions):
    """Which model embeds the shards, and where it runs (`curation embed`)."""

    model: str
    """Any model `clipmodule.load` reads: a checkpoint path (OpenAI, open_clip, Hugging Face, ours) or a name
    whose weights are in $CLIPMODULE_HOME."""
    embedder: str = "clipmodule.embedding:ShardEmbedder"
    """The embedder plugin, `module:Class` (see clipformats.embeddings.ShardEmbedder), imported by name when
    the stage runs."""
    dtype: Literal["float16", "float32"] = "float16"
    """Stored precision of the (L2-normalised) embeddings; float16 is clip-retrieval's default."""
    device: str = "cpu"
    """Torch device of each worker's model (cpu, cuda, cuda:1); several GPUs: `clipmodule predict` (DDP)."""
    batch_size: int = 64
    """Samples per forward pass."""
    workers: int = 1
    """Worker processes (or Ray actors), each holding the model (0: one per CPU core)."""
    threads: int = 0
    """Torch threads per worker (0: torch's default)."""
    max_image_pixels: int = MAX_IMAGE_PIXELS
    """Images whose header says width x height is over this are not decoded; they get no row (counted)."""

    def __post_init__(self) -> None:
        _require(bool(self.model), "embed.model: give a checkpoint path or a model name")
        for name, least in (("batch_size", 1), ("workers", 0), ("threads", 0), ("max_image_pixels", 1)):
            _require(getattr(self, name) >= least, f"embed.{name} must be >= {least}, got {getattr(self, name)}")


@dataclass
class IndexConfig:
    """The kNN index `curation index` builds over an embedding folder (faiss), chosen by size as autofaiss does."""

    kind: Literal["image", "text"] = "image"
    """Which embeddings are indexed (image: text-to-image and image-to-image search)."""
    max_memory_gb: float = 4.0
    """Memory the index may take (GiB): an exact index while it fits and the set is small, else HNSW while
    it fits, else IVF with 8-bit scalar codes, else IVF-PQ codes sized to fit."""
    exact_max: int = 100_000
    """Sets of at most this many vectors get an exact (flat) index."""
    target_recall: float = 0.95
    """recall@k the search parameter (nprobe, efSearch) is tuned to reach on the held-out queries."""
    k: int = 10
    """Neighbours per query in the recall measurement (recall@k)."""
    recall_queries: int = 1000
    """Held-out queries: the other kind's embeddings (captions for an image index) of this many random rows."""
    seed: int = 0
    """Seed of the query sample and of the index training sample."""
    threads: int = 0
    """faiss threads (0: faiss's default, one per core)."""

    def __post_init__(self) -> None:
        _require(self.max_memory_gb > 0, f"index.max_memory_gb must be > 0, got {self.max_memory_gb}")
        _require(0.0 < self.target_recall <= 1.0, f"index.target_recall must be in (0, 1], got {self.target_recall}")
        for name, least in (("exact_max", 0), ("k", 1), ("recall_queries", 1), ("threads", 0)):
            _require(getattr(self, name) >= least, f"index.{name} must be >= {least}, got {getattr(self, name)}")


@dataclass
class DatasetBase:
    """A whole dataset build's own settings; `curation.stages.dataset_config_type` adds one field per stage
    (the stage's settings, under its name: `queries`, `match`, ..., `filter`, `decontaminate`)."""

    name: str
    """Dataset name; names the data card (`<cards_dir>/<name>.md`)."""
    captions: list[str]
    """Caption tables: files, folders or glob patterns (paths relative to the current directory)."""
    work_dir: Path | None = None
    """Folder for the stages' files (default: work/<name>)."""
    cards_dir: Path = Path("data_cards")
    """Folder for the data card."""
    eval_sets: list[str] = field(default_factory=list)
    """Evaluation sets for the decontaminate stage: folders of images or webdataset .tar files."""

    def __post_init__(self) -> None:
        _require(bool(self.name) and self.name.replace("-", "").replace("_", "").replace(".", "").isalnum(),
                 f"name must be letters, digits, '-', '_' or '.', got {self.name!r}")
        _require(bool(self.captions), "captions: give at least one caption table")
        self.work_dir = Path(self.work_dir) if self.work_dir is not None else Path("work") / self.name
        self.cards_dir = Path(self.cards_dir)


@dataclass(frozen=True)
class WorkLayout:
    """Where each stage's files live inside a work folder."""

    work_dir: Path

    @property
    def queries(self) -> Path:
        return Path(self.work_dir) / "queries.parquet"

    @property
    def matched(self) -> Path:
        return Path(self.work_dir) / "matched"

    @property
    def balanced(self) -> Path:
        return Path(self.work_dir) / "balanced"

    @property
    def shards(self) -> Path:
        return Path(self.work_dir) / "shards"

    @property
    def embeddings(self) -> Path:
        return Path(self.work_dir) / "embeddings"

    @property
    def filtered(self) -> Path:
        return Path(self.work_dir) / "filtered"

    @property
    def deduplicated(self) -> Path:
        return Path(self.work_dir) / "deduplicated"

    @property
    def decontaminated(self) -> Path:
        return Path(self.work_dir) / "decontaminated"
