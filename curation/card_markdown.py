"""The human-readable data card: the JSON card rendered section by section (see data_cards/TEMPLATE.md)."""

from __future__ import annotations

from typing import Any


def table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.1%}" if value <= 1 else f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value).replace("|", "\\|")


def _summary(card: dict[str, Any], labels: list[tuple[str, str]]) -> str:
    s = card["summary"]
    rows = [["queries", s["queries"]], ["caption rows read", s["caption_rows"]],
            ["rows containing a query", s["matched_rows"]], ["rows kept by balancing", s["balanced_rows"]],
            ["images downloaded", s["images"]]]
    rows += [[label, s[key]] for key, label in labels if key in s]
    rows.append(["shards", s["shards"]])
    return f"# Data card: {card['name']}\n\nContent hash (SHA-256 of the shard list): `{card['content_hash']}`\n\n" + \
        table(["", "count"], rows)


def _queries(card: dict[str, Any]) -> str:
    q = card["queries"]
    rows = [[name, c["candidates"], c["in_list"]] for name, c in q["sources"].items()]
    return (f"## Query list\n\n{q['terms']:,} queries (cap {q['max_terms']:,}; {q['dropped_by_cap']:,} dropped by "
            f"the cap; unigram counts from {q.get('unigram_source', 'n/a')}).\n\n"
            + table(["source", "terms", "in the list"], rows))


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


def _tail(b: dict[str, Any]) -> str:
    """t's tail proportion (MetaCLIP's p): asked for, or what the given t gives; and each language's t."""
    if "tail_proportion_at_t" not in b:
        return ""
    asked = b.get("tail_proportion")
    text = (f" (from tail proportion {asked:.3g}: queries under t hold {b['tail_proportion_at_t']:.1%} of matches)"
            if asked is not None else f" (queries under t hold {b['tail_proportion_at_t']:.1%} of matches)")
    if b.get("t_per_language"):
        text += "; per language t = " + ", ".join(f"{lang} {t:,}" for lang, t in b["t_per_language"].items())
    return text


def _languages(b: dict[str, Any]) -> str:
    """Worldwide curation: captions, matched and kept rows per language, with each language's t."""
    if "rows_by_language" not in b:
        return ""
    seen, t = b.get("rows_in_by_language", {}), b.get("t_per_language", {})
    rows = [[lang, seen.get(lang, ""), r["matched"], r["kept"], t.get(lang, "")] for lang, r in
            b["rows_by_language"].items()]
    return "### Rows per language\n\n" + table(["language", "captions", "matched", "kept", "t"], rows) + "\n\n"


def _balancing(card: dict[str, Any]) -> str:
    b = card["balance"]
    head = table(["query", "rows matched", "rows kept"], [[h["term"], h["matched"], h["kept"]] for h in b["head"]])
    labels = list(dict.fromkeys([*b["buckets_before"], *b["buckets_after"]]))
    buckets = table(["rows per query", "queries before", "queries after"],
                     [[label, b["buckets_before"].get(label, 0), b["buckets_after"].get(label, 0)] for label in labels])
    d = b["matched_rows_per_query"]
    return (f"## Balancing\n\nt = {b['t']:,}{_tail(b)}, seed {b['seed']}, row key `{b['key_column']}`: "
            f"kept {b['rows_out']:,} of "
            f"{b['rows_in']:,} rows ({b['keep_rate']:.1%}); {b['queries_capped']:,} queries had more than t rows. "
            "A row is kept when any of its queries' coins comes up (p = min(1, t / rows of the query)), so a query "
            "that shares rows with rarer ones can keep more than t. "
            f"Rows per matched query: median {d['p50']:,.0f}, p90 {d['p90']:,.0f}, p99 {d['p99']:,.0f}, "
            f"max {d['max']:,}.\n\n![rows per query before and after balancing]({card['plot']})\n\n"
            f"{_languages(b)}### Head: most matched queries\n\n{head}\n\n"
            f"### Tail: queries by number of rows\n\n{buckets}")


def _download(card: dict[str, Any]) -> str:
    d = card["download"]
    reasons = table(["failure reason", "rows"], [[r, n] for r, n in d["failure_reasons"].items()]) \
        if d["failure_reasons"] else "No failures."
    return (f"## Download\n\n{d['successes']:,} of {d['input_rows']:,} images downloaded ({d['success_rate']:.1%}; "
            f"{d['failed_to_download']:,} failed to download, {d['failed_to_resize']:,} failed to decode or resize), "
            f"written as {d['output_format']}." + _duplicates(d) + _faces(d) + f"\n\n{reasons}")


def _faces(d: dict[str, Any]) -> str:
    """Faces blurred at download, and rows fetched again by --retry-failed."""
    faces, retried = d.get("faces_blurred"), d.get("retried_rows")
    text = (f" Faces blurred (OpenCV's Haar cascade): {faces['faces']:,} in {faces['images_with_faces']:,} images."
            if faces else "")
    return text + (f" {retried:,} failed rows were fetched again (--retry_failed)." if retried else "")


def _duplicates(d: dict[str, Any]) -> str:
    repeats, dropped = d.get("duplicate_urls", 0), d.get("duplicates_dropped", 0)
    if not repeats:
        return ""
    return (f" {repeats:,} rows repeat an earlier row's URL; " +
            ("they were dropped (--dedup_urls)." if dropped else "they were kept (each is downloaded again)."))


def truth(scores: dict[str, Any] | None) -> str:
    """A stage's precision and recall against known cases, as a clause of its sentence (empty without them)."""
    if not scores or scores.get("precision") is None or scores.get("recall") is None:
        return ""
    return (f"; against {scores['truth']:,} known cases: precision {scores['precision']:.3f}, "
            f"recall {scores['recall']:.3f}")


def _shards(card: dict[str, Any]) -> str:
    rows = [[s["name"], s["samples"], s["bytes"], f"`{s['sha256']}`"] for s in card["shards"]]
    return "## Shards\n\n" + table(["shard", "samples", "bytes", "sha256"], rows)


def _config(card: dict[str, Any]) -> str:
    import yaml  # here, not at import: the stage modules use this module's tables and `--help` stays fast

    text = yaml.safe_dump(card["config"], sort_keys=False, allow_unicode=True)
    lineage = card["lineage"]
    inputs = table(["caption table", "bytes"], [[i["path"], i["bytes"]] for i in lineage["captions"]])
    stages = " → ".join(f"{s['stage']} (`{s['output']}`)" for s in lineage.get("stages", []))
    after = f" After download: {stages}." if stages else ""
    return f"## Configuration\n\n```yaml\n{text}```\n\n## Lineage\n\n{inputs}\n\nwordfreq {lineage['wordfreq']}; " \
        f"work folder `{lineage['work_dir']}`.{after}"


def render_markdown(card: dict[str, Any], stages: list[Any]) -> str:
    """The card for people; `stages`: the optional stages' `CardSection`s in build order (those on the card are
    rendered after the download's section)."""
    labels = [(stage.summary[0], stage.summary[1]) for stage in stages if stage.summary is not None]
    parts = [_summary(card, labels), _queries(card), _matching(card), _balancing(card), _download(card)]
    parts += [stage.markdown(card[stage.key]) for stage in stages if card.get(stage.key) is not None]
    parts += [_shards(card), _config(card)]
    return "\n\n".join(text for text in parts if text) + "\n"
