"""`curation card`: the data card of a built dataset, from the stages' stats files.

Writes `<cards_dir>/<name>.json` (everything, machine-readable), `<name>.md` (for people, following
`data_cards/TEMPLATE.md`) and `<name>.png` (rows per query before and after balancing, log axes), plus the
plots of the optional stages that ran after download (the stage registry's, in build order: embed → filter →
dedup → decontaminate; the filter's CLIP-score histogram, dedup's and decontamination's thumbnails). Each
optional stage must have read, as they are now (names, sizes and times in its stats), the shards of the last
shard-writing stage before it (embed: the download's), else the card is refused; the dataset is the last
shard-writing stage's shards. The
`content_hash` (defined by the shard contract, `clipformats.webdataset`) is the SHA-256 of the sorted
"name sha256" lines of the data shards: training runs record it to say exactly which data they saw. Nothing
time-dependent goes in, so rebuilding a card changes no byte.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from clipformats.files import atomic_path, remove_stale_temporaries, write_text
from clipformats.webdataset import content_hash, shard_records
from curation.card_markdown import render_markdown
from curation.config import WorkLayout
from curation.errors import CurationError
from curation.progress import report
from curation.stage import read_json, sidecar, stats_path
from curation.stages import registry

HEAD = 10
STAGES = ("queries", "match", "balance", "download")


def _stage_stats(layout: WorkLayout) -> dict[str, dict[str, Any]]:
    outputs = dict(zip(STAGES, (layout.queries, layout.matched, layout.balanced, layout.shards)))
    found = {}
    for stage, out in outputs.items():
        stats = read_json(stats_path(out), f"{stage} stats (run `curation {stage}` first)")
        if not stats.get("finished"):
            raise CurationError(f"{stats_path(out)}: `curation {stage}` has not finished")
        found[stage] = stats
    return found


def count_buckets(counts: np.ndarray) -> dict[str, int]:
    """How many queries have 1, 2-10, 11-100, 101-1000, … rows (queries with no rows left out)."""
    buckets = {"1": int((counts == 1).sum())}
    low, high = 2, 10
    while low <= counts.max(initial=0):
        buckets[f"{low:,}-{high:,}"] = int(((counts >= low) & (counts <= high)).sum())
        low, high = high + 1, high * 10
    return buckets


def query_distribution(counts_file: Path, t: int) -> dict[str, Any]:
    """Head (most matched queries) and the shape of the tail, before and after balancing."""
    languages = "lang" in pq.read_schema(counts_file).names  # worldwide: a term per language it is listed in
    table = pq.read_table(counts_file, columns=["term", "matched", "kept", *(["lang"] if languages else [])])
    matched, kept = table["matched"].to_numpy(), table["kept"].to_numpy()
    order = np.argsort(-matched, kind="stable")[:HEAD]
    head = [{"term": table["term"][int(i)].as_py(), "matched": int(matched[i]), "kept": int(kept[i]),
             **({"lang": table["lang"][int(i)].as_py()} if languages else {})} for i in order]
    seen = matched[matched > 0]
    quantiles = {f"p{q}": float(np.percentile(seen, q)) if len(seen) else 0.0 for q in (50, 90, 99)}
    return {"head": head, "matched_rows_per_query": {**quantiles, "max": int(seen.max(initial=0))},
            "buckets_before": count_buckets(matched), "buckets_after": count_buckets(kept),
            "queries_over_t_after": int((kept > t).sum())}


def plot_counts(counts_file: Path, t: int, path: Path) -> None:
    """Rows per query, sorted, before and after balancing, on log-log axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = pq.read_table(counts_file, columns=["matched", "kept"])
    matched, kept = table["matched"].to_numpy(), table["kept"].to_numpy()
    figure, axes = plt.subplots(figsize=(6.4, 4.2), dpi=100)
    lines = ((matched, "matched (before balancing)", 4.0, 0.45), (kept, "kept (after balancing)", 1.5, 1.0))
    for values, label, width, alpha in lines:  # the wide, faint line stays visible where the two coincide
        values = np.sort(values[values > 0])[::-1]
        if len(values):
            axes.plot(np.arange(1, len(values) + 1), values, label=label, drawstyle="steps-post", linewidth=width,
                      alpha=alpha)
    axes.axhline(t, color="grey", linestyle="--", linewidth=1, label=f"t = {t:,}")
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlabel("query rank (queries sorted by rows, log scale)")
    axes.set_ylabel("rows containing the query (log scale)")
    axes.set_title("Rows per query before and after balancing")
    axes.legend()
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", metadata={"Software": None})
    plt.close(figure)


def shard_list(shards_dir: Path, download: dict[str, Any]) -> list[dict[str, Any]]:
    """The card's record of each shard the download stats list (samples as img2dataset recorded them)."""
    paths = [shards_dir / name for name in download["data_files"]]
    for path in paths:
        if not path.is_file():
            raise CurationError(f"{path}: shard listed by the download stats is missing")
    return shard_records(paths)


def optional_outputs(layout: WorkLayout) -> dict[str, Path]:
    """The optional build stages' outputs in this work folder, in build order."""
    return {stage.name: Path(layout.work_dir) / stage.output for stage in registry().carded()}


def optional_stats(layout: WorkLayout, stages: tuple[str, ...] | None = None) -> dict[str, dict[str, Any]]:
    """The finished stats of the optional stages (`stages`, or those with stats in the work folder), in order,
    after checking that each read the current shards of the stage before it."""
    outputs = optional_outputs(layout)
    names = stages if stages is not None else tuple(n for n in outputs if stats_path(outputs[n]).exists())
    found, source = {}, layout.shards
    for stage in (s for s in registry().carded() if s.name in names):
        out = outputs[stage.name]
        stats = read_json(stats_path(out), f"{stage.name} stats (run `curation {stage.name}` first)")
        if not stats.get("finished"):
            raise CurationError(f"{stats_path(out)}: `curation {stage.name}` has not finished")
        _check_read(stage.name, out, stats["fingerprint"].get("inputs", []),
                    layout.shards if stage.reads_download else source)
        found[stage.name] = stats
        source = out if stage.writes_shards else source
    return found


def _check_read(name: str, out: Path, inputs: list[dict[str, Any]], folder: Path) -> None:
    """Refuse a stage whose recorded input shards are not the current files of `folder` (a stale output)."""
    for record in inputs:
        current = folder / Path(record["path"]).name
        info = current.stat() if current.is_file() else None
        if info is None or (info.st_size, info.st_mtime_ns) != (record["bytes"], record["mtime_ns"]):
            raise CurationError(f"{out}: `curation {name}` read {record['path']}, which is not the current "
                                f"{current}; re-run `curation {name}` on {folder} or remove {out}")


def build_card(name: str, layout: WorkLayout, stages: tuple[str, ...] | None = None) -> dict[str, Any]:
    """Everything the card says, as one JSON-ready mapping (`stages`: the optional stages it covers; None:
    those found in the work folder)."""
    stats = _stage_stats(layout)
    queries, match, balance, download = (stats[s] for s in STAGES)
    shards = shard_list(layout.shards, download)
    extra = optional_stats(layout, stages)
    card = {
        "name": name,
        "content_hash": content_hash(shards),
        "summary": {"queries": queries["terms"], "caption_rows": match["rows_in"],
                    "matched_rows": match["rows_matched"], "balanced_rows": balance["rows_out"],
                    "images": download["successes"], "shards": len(shards)},
        "queries": {k: queries[k] for k in ("terms", "unique_candidates", "dropped_by_cap", "max_terms", "sources",
                                            "unigram_source") if k in queries},
        "match": {**{k: match[k] for k in ("rows_in", "rows_matched", "rows_dropped", "match_rate", "queries",
                                           "queries_matched")},
                  "rows_refused_url": match.get("rows_refused_url", 0), "urls_refused": match.get("urls_refused", {})},
        "balance": {**{k: balance[k] for k in ("t", "seed", "key_column", "rows_in", "rows_out", "keep_rate",
                                               "queries_matched", "queries_capped")},
                    **{k: balance[k] for k in ("tail_proportion", "tail_proportion_at_t", "t_per_language",
                                               "rows_by_language") if k in balance},
                    **({"rows_in_by_language": match["rows_in_by_language"]} if "rows_in_by_language" in match
                       else {}),
                    **query_distribution(sidecar(layout.balanced, ".counts.parquet"), balance["t"])},
        "download": {**{k: download[k] for k in ("input_rows", "successes", "failed", "success_rate",
                                                 "failed_to_download", "failed_to_resize", "failure_reasons",
                                                 "output_format")},
                     "duplicate_urls": download.get("duplicate_urls", 0),
                     "duplicates_dropped": download.get("duplicates_dropped", 0),
                     **{k: download[k] for k in ("faces_blurred", "retried_rows") if k in download}},
        "shards": shards,
        "config": {**{stage: stats[stage]["fingerprint"].get("config") for stage in STAGES[:3]},
                   "download": download.get("settings")},
        "lineage": {"captions": match["fingerprint"]["inputs"], "query_sources": queries["fingerprint"]["inputs"],
                    "wordnet": queries["fingerprint"].get("wordnet"),
                    "wordfreq": queries["fingerprint"].get("wordfreq"), "work_dir": str(layout.work_dir)},
        "plot": f"{name}.png",
    }
    _add_optional(card, extra, layout)
    return card


def _add_optional(card: dict[str, Any], extra: dict[str, dict[str, Any]], layout: WorkLayout) -> None:
    """The optional stages' sections, configs and lineage; the dataset is the last shard stage's shards."""
    stages = [stage for stage in registry().carded() if stage.name in extra]
    for stage in stages:
        section = stage.card.section(extra[stage.name])
        card[stage.card.key] = section
        if stage.card.summary is not None:
            key, _, count = stage.card.summary
            card["summary"][key] = section[count]
        card["config"][stage.name] = extra[stage.name]["fingerprint"].get("config")
    outputs = optional_outputs(layout)
    card["lineage"]["stages"] = [{"stage": stage.name, "output": str(outputs[stage.name])} for stage in stages]
    last = next((extra[s.name] for s in reversed(stages) if s.writes_shards), None)
    if last is not None:  # the training data is the last stage's shards: the hash and shard list say so
        card["shards"], card["content_hash"] = last["shards"], last["content_hash"]


def check_card_name(name: str) -> None:
    """A card name is a plain file name: path parts would write outside the cards folder."""
    if not name or name in (".", "..") or name.startswith(".") or Path(name).name != name or "\\" in name:
        raise CurationError(f"{name!r}: a card name must be a plain name (no '/', '\\' or leading '.'), "
                            f"e.g. 'cc3m-small'")


def write_card(name: str, work_dir: Path, cards_dir: Path, stages: tuple[str, ...] | None = None) -> dict[str, Any]:
    """Write `<cards_dir>/<name>.{json,md,png}` for the dataset built in `work_dir` (`stages`: the optional
    stages the card covers, as `build` ran them; None: those found in `work_dir`)."""
    check_card_name(name)
    layout = WorkLayout(Path(work_dir))
    card = build_card(name, layout, stages)
    cards_dir = Path(cards_dir)
    cards_dir.mkdir(parents=True, exist_ok=True)
    plots = {s.card.key: s.card.plot for s in registry().carded() if s.card.plot is not None}
    for suffix in (".json", ".md", ".png", *(f".{copy}.png" for _, copy in plots.values())):  # killed writes' leftovers
        remove_stale_temporaries(cards_dir / f"{name}{suffix}")
    plot_counts(sidecar(layout.balanced, ".counts.parquet"), card["balance"]["t"], cards_dir / f"{name}.png")
    for section, (field, copy) in plots.items():
        if (source := card.get(section, {}).get(field)) is not None and Path(source).is_file():
            with atomic_path(cards_dir / f"{name}.{copy}.png") as tmp:
                shutil.copyfile(source, tmp)
            card[section][field] = f"{name}.{copy}.png"
    write_text(cards_dir / f"{name}.json", json.dumps(card, indent=2, ensure_ascii=False) + "\n")
    write_text(cards_dir / f"{name}.md", render_markdown(card, [s.card for s in registry().carded()]))
    report(f"card: {cards_dir / name}.md (content hash {card['content_hash'][:16]}…)")
    return card
