"""The human-readable data card: the JSON card rendered section by section (see data_cards/TEMPLATE.md)."""

from __future__ import annotations

from typing import Any

import yaml


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.1%}" if value <= 1 else f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value).replace("|", "\\|")


def _summary(card: dict[str, Any]) -> str:
    s = card["summary"]
    rows = [["queries", s["queries"]], ["caption rows read", s["caption_rows"]],
            ["rows containing a query", s["matched_rows"]], ["rows kept by balancing", s["balanced_rows"]],
            ["images downloaded", s["images"]]]
    rows += [[label, s[key]] for key, label in (("filtered_images", "kept by the filter"),
                                                ("deduplicated_images", "kept by dedup"),
                                                ("decontaminated_images", "kept by decontamination")) if key in s]
    rows.append(["shards", s["shards"]])
    return f"# Data card: {card['name']}\n\nContent hash (SHA-256 of the shard list): `{card['content_hash']}`\n\n" + \
        _table(["", "count"], rows)


def _queries(card: dict[str, Any]) -> str:
    q = card["queries"]
    rows = [[name, c["candidates"], c["in_list"]] for name, c in q["sources"].items()]
    return (f"## Query list\n\n{q['terms']:,} queries (cap {q['max_terms']:,}; {q['dropped_by_cap']:,} dropped by "
            f"the cap; unigram counts from {q.get('unigram_source', 'n/a')}).\n\n"
            + _table(["source", "terms", "in the list"], rows))


def _matching(card: dict[str, Any]) -> str:
    m = card["match"]
    return (f"## Matching\n\n{m['rows_matched']:,} of {m['rows_in']:,} caption rows contain at least one query "
            f"(match rate {m['match_rate']:.1%}); {m['rows_dropped']:,} rows matched nothing and were dropped. "
            f"{m['queries_matched']:,} of {m['queries']:,} queries occur at least once."
            + _refused(m.get("rows_refused_url", 0), m.get("urls_refused", {})))


def _refused(rows: int, reasons: dict[str, int]) -> str:
    if not rows:
        return ""
    return f" {rows:,} rows were dropped for their URL: " + "; ".join(f"{n:,} {r}" for r, n in reasons.items()) + "."


def _balancing(card: dict[str, Any]) -> str:
    b = card["balance"]
    head = _table(["query", "rows matched", "rows kept"], [[h["term"], h["matched"], h["kept"]] for h in b["head"]])
    labels = list(dict.fromkeys([*b["buckets_before"], *b["buckets_after"]]))
    buckets = _table(["rows per query", "queries before", "queries after"],
                     [[label, b["buckets_before"].get(label, 0), b["buckets_after"].get(label, 0)] for label in labels])
    d = b["matched_rows_per_query"]
    return (f"## Balancing\n\nt = {b['t']:,}, seed {b['seed']}, row key `{b['key_column']}`: kept {b['rows_out']:,} of "
            f"{b['rows_in']:,} rows ({b['keep_rate']:.1%}); {b['queries_capped']:,} queries had more than t rows. "
            "A row is kept when any of its queries' coins comes up (p = min(1, t / rows of the query)), so a query "
            "that shares rows with rarer ones can keep more than t. "
            f"Rows per matched query: median {d['p50']:,.0f}, p90 {d['p90']:,.0f}, p99 {d['p99']:,.0f}, "
            f"max {d['max']:,}.\n\n![rows per query before and after balancing]({card['plot']})\n\n"
            f"### Head: most matched queries\n\n{head}\n\n"
            f"### Tail: queries by number of rows\n\n{buckets}")


def _download(card: dict[str, Any]) -> str:
    d = card["download"]
    reasons = _table(["failure reason", "rows"], [[r, n] for r, n in d["failure_reasons"].items()]) \
        if d["failure_reasons"] else "No failures."
    return (f"## Download\n\n{d['successes']:,} of {d['input_rows']:,} images downloaded ({d['success_rate']:.1%}; "
            f"{d['failed_to_download']:,} failed to download, {d['failed_to_resize']:,} failed to decode or resize), "
            f"written as {d['output_format']}." + _duplicates(d) + f"\n\n{reasons}")


def _duplicates(d: dict[str, Any]) -> str:
    repeats, dropped = d.get("duplicate_urls", 0), d.get("duplicates_dropped", 0)
    if not repeats:
        return ""
    return (f" {repeats:,} rows repeat an earlier row's URL; " +
            ("they were dropped (--dedup-urls)." if dropped else "they were kept (each is downloaded again)."))


def _embeddings(card: dict[str, Any]) -> str:
    e = card.get("embeddings")
    if e is None:
        return ""
    model = e["model"]
    skipped = "; ".join(f"{n:,} {r}" for r, n in e["skipped"].items()) or "none"
    return (f"## Embeddings\n\n{e['rows_out']:,} of {e['rows_in']:,} samples embedded with `{model.get('name')}` "
            f"(width {model.get('embed_dim', '?')}, stored {e['dtype']}, L2-normalised); skipped: {skipped}.")


def _filter(card: dict[str, Any]) -> str:
    f = card.get("filter")
    if f is None:
        return ""
    reasons = _table(["dropped for", "samples"], [[r, n] for r, n in f["dropped_by_reason"].items()]) \
        if f["dropped_by_reason"] else "Nothing dropped."
    score = f["clip_score"]
    cut = f"; score cut {score['threshold']:.4f}" if score.get("threshold") is not None else ""
    settings = ", ".join(f"{k} = {v}" for k, v in f["filters"].items())
    clusters = f.get("image_clustering")
    clustered = (f" Image-based clustering: {clusters['clusters']:,} clusters, {clusters['clusters_targeted']:,} "
                 f"nearest to the {clusters['target_embeddings']:,} target embeddings." if clusters else "")
    return (f"## Filter\n\nKept {f['rows_kept']:,} of {f['rows_in']:,} samples ({settings}). A dropped sample is "
            f"counted under the first filter it fails.{clustered} CLIP score (cosine of image and caption "
            f"embeddings): mean {score['mean']:.3f}, median {score['p50']:.3f}, p5 {score['p5']:.3f}, "
            f"p95 {score['p95']:.3f}{cut}. Every sample's decision: `{f['rows_file']}`.\n\n{reasons}\n\n"
            f"![CLIP-score histogram]({f['histogram_png']})")


def _dedup(card: dict[str, Any]) -> str:
    d = card.get("dedup")
    if d is None:
        return ""
    pairs = _table(["dropped", "duplicate of", "cosine"],
                   [[f"{p['shard']}:{p['key']}", f"{p['duplicate_of_shard']}:{p['duplicate_of_key']}",
                     f"{p['cosine']:.4f}"] for p in d["top_pairs"]])
    picture = f"\n\n![closest near-duplicates]({d['thumbnails']})" if d["thumbnails"] else ""
    return (f"## Deduplication\n\n{d['rows_dropped']:,} of {d['rows_in']:,} samples dropped as near-duplicates "
            f"(SemDeDup: {d['clusters']:,} k-means clusters, a sample whose image-embedding cosine with an "
            f"earlier one of its cluster is above {d['threshold']} is dropped; the first by shard and key is "
            "kept)" + _truth(d.get("truth")) + f". Drop list: "
            f"`{d['drop_list']}`." + (f"\n\n### Closest pairs\n\n{pairs}{picture}" if d["top_pairs"] else ""))


def _truth(truth: dict[str, Any] | None) -> str:
    if not truth or truth.get("precision") is None or truth.get("recall") is None:
        return ""
    return (f"; against {truth['truth']:,} known cases: precision {truth['precision']:.3f}, "
            f"recall {truth['recall']:.3f}")


def _decontamination(card: dict[str, Any]) -> str:
    d = card.get("decontamination")
    if d is None:
        return ""  # not run: the card reads as it did before the stage existed
    sets = _table(["evaluation set", "images", "training samples dropped"],
                  [[s["source"], s["images"], s["training_samples_dropped"]] for s in d["eval_sets"]])
    top = _table(["shard", "key", "distance", "evaluation image"],
                 [[m["shard"], m["key"], m["distance"], m["eval_image"]] for m in d["top_matches"][:10]])
    picture = f"\n\n![closest matches]({d['thumbnails']})" if d["thumbnails"] else ""
    return (f"## Decontamination\n\n{d['samples_dropped']:,} of {d['samples_in']:,} training samples dropped: "
            f"their {d['hash']} ({d['hash_bits']} bits) is within Hamming distance {d['threshold']} of an "
            f"evaluation image's" + _embedding_pass(d) + _truth(d.get("truth")) +
            f". The shards below are the cleaned ones; the drop list is `{d['drop_list']}`."
            f"\n\n{sets}" + (f"\n\n### Closest matches\n\n{top}{picture}" if d["top_matches"] else ""))


def _embedding_pass(d: dict[str, Any]) -> str:
    e = d.get("embedding_pass")
    if not e:
        return ""
    return (f", or their image embedding has cosine >= {e['threshold']} with one of {e['eval_rows']:,} evaluation "
            f"embeddings ({e['samples_dropped_only_by_embedding']:,} caught by the embedding pass alone)")


def _shards(card: dict[str, Any]) -> str:
    rows = [[s["name"], s["samples"], s["bytes"], f"`{s['sha256']}`"] for s in card["shards"]]
    return "## Shards\n\n" + _table(["shard", "samples", "bytes", "sha256"], rows)


def _config(card: dict[str, Any]) -> str:
    text = yaml.safe_dump(card["config"], sort_keys=False, allow_unicode=True)
    lineage = card["lineage"]
    inputs = _table(["caption table", "bytes"], [[i["path"], i["bytes"]] for i in lineage["captions"]])
    stages = " → ".join(f"{s['stage']} (`{s['output']}`)" for s in lineage.get("stages", []))
    after = f" After download: {stages}." if stages else ""
    return f"## Configuration\n\n```yaml\n{text}```\n\n## Lineage\n\n{inputs}\n\nwordfreq {lineage['wordfreq']}; " \
        f"work folder `{lineage['work_dir']}`.{after}"


def render_markdown(card: dict[str, Any]) -> str:
    sections = (_summary, _queries, _matching, _balancing, _download, _embeddings, _filter, _dedup, _decontamination,
                _shards, _config)
    return "\n\n".join(text for section in sections if (text := section(card))) + "\n"
