"""Which concepts the training data taught: a zero-shot result's per-class recall against how many training captions
name each class (the log-linear trend of Udandarao et al. 2024, "No 'zero-shot' without exponential data").

`clipmodule eval concepts --result R`:

1. reads R, a zero-shot record (`eval zeroshot`'s JSON, or a row of a suite's JSON: `--row`): its class names and
   per-class recall (the record's `detail`);
2. finds the training data: the data card named by `--card`, or the card in `--cards` whose `content_hash` is the
   run's `data_card_hash` (`--data_card_hash`, or the tag of the MLflow fit run whose run folder holds the model);
3. counts each class name in the captions the card's curation run matched (`<work_dir>/matched/*.parquet`, before
   balancing) and kept (`<work_dir>/balanced/*.parquet`, after), with the matching rule `curation match` uses
   (`clipformats.matching`: the same normalisation and word boundaries; clipmodule does not import curation);
   where the captions are gone, the balance stage's counts per query (`balanced.counts.parquet`) give the class
   names that are queries their counts, else the card's head (its most matched queries) those among them
   (`class_counts`); a class list none of these counts stops with one line;
4. fits recall = a + b·log10(count) over the classes the data showed, lists the classes it never showed and those
   it showed fewer than `--rare` times, and writes `<output>.md`, `.json` and a `.png` scatter with the fit.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from clipformats.curation_outputs import BALANCE_COUNTS, BALANCED, MATCHED
from clipformats.matching import boundary_key, count_matches
from clipmodule.errors import ClipModuleError


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ClipModuleError(f"{path}: cannot read the {what} ({error.strerror})") from None
    except ValueError:
        raise ClipModuleError(f"{path}: the {what} is not JSON") from None
    if not isinstance(value, dict):
        raise ClipModuleError(f"{path}: the {what} is not a JSON object")
    return value


def zeroshot_result(path: str | Path, row: str | None = None) -> dict[str, Any]:
    """{model, name, classnames, recall, count} of a zero-shot record, or of the suite row `row`."""
    path = Path(path)
    record = _read_json(path, "result")
    if "rows" in record:  # a suite: its rows with per-class results
        rows = [entry for entry in record["rows"] if "classnames" in entry and "detail" in entry]
        chosen = [entry for entry in rows if row in (None, entry.get("name"))]
        if len(chosen) != 1:
            names = ", ".join(entry.get("name", "?") for entry in rows) or "none"
            wanted = f"no row {row!r}" if row else "several zero-shot rows"
            raise ClipModuleError(f"{path}: {wanted} with per-class results; pass --row (rows: {names})")
        entry, name = chosen[0], chosen[0].get("name")
    else:
        entry, name = record, record.get("dataset")
    detail = entry.get("detail") or {}
    if "per_class_recall" not in detail or "classnames" not in entry:
        raise ClipModuleError(f"{path}: no per-class zero-shot results (a zero-shot record written by this version "
                              "of `clipmodule eval`)")
    if len(detail["per_class_recall"]) != len(entry["classnames"]):
        raise ClipModuleError(f"{path}: {len(entry['classnames'])} class names but "
                              f"{len(detail['per_class_recall'])} per-class results")
    return {"model": record.get("model"), "name": name, "classnames": list(entry["classnames"]),
            "recall": detail["per_class_recall"], "count": detail.get("per_class_count")}


def find_card(cards: str | Path, content_hash: str) -> Path:
    """The data card (json) in `cards` whose `content_hash` is `content_hash`."""
    folder = Path(cards)
    if not folder.is_dir():
        raise ClipModuleError(f"{folder}: no folder of data cards (--cards)")
    for path in sorted(folder.glob("*.json")):
        try:
            if json.loads(path.read_text(encoding="utf-8")).get("content_hash") == content_hash:
                return path
        except (OSError, ValueError, AttributeError):
            continue
    raise ClipModuleError(f"{folder}: no data card with content_hash {content_hash} (the run's data_card_hash)")


def _work_candidates(card: Path, work_dir: str | None, required: bool = True) -> list[Path]:
    """The folders where the card's curation run may be; none (`required` False) when the card names none."""
    if work_dir is not None:
        return [Path(work_dir)]
    named = (_read_json(card, "data card").get("lineage") or {}).get("work_dir")
    if not named:
        if not required:
            return []
        raise ClipModuleError(f"{card}: the card names no work_dir (lineage.work_dir); pass --work_dir")
    return [Path(named), card.resolve().parent.parent / named]


def card_work_dir(card: Path, work_dir: str | None = None) -> Path:
    """The curation work folder of the card's run (`lineage.work_dir`, relative to where curation ran: tried from
    here and from the card's parent folder), or `work_dir` when given."""
    candidates = _work_candidates(card, work_dir)
    for folder in candidates:
        if (folder / MATCHED).is_dir():
            return folder
    raise ClipModuleError(f"{candidates[0]}: no matched/ folder of the card's curation run; pass --work_dir")


def query_counts(path: Path) -> dict[str, tuple[int, int]]:
    """{term in its matching form: (rows matched, rows kept)} of a `balanced.counts.parquet` (curation's balance)."""
    import pyarrow.parquet as pq

    try:
        per_language = "lang" in pq.read_schema(path).names
        rows = pq.read_table(path, columns=["term", "matched", "kept"] + ["lang"] * per_language).to_pylist()
    except (OSError, KeyError, ValueError) as error:
        raise ClipModuleError(f"{path}: not a table of counts per query ({str(error).splitlines()[0]})") from None
    return summed_counts(rows, per_language, str(path))


def _whole(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and float(value).is_integer() and value >= 0


def summed_counts(rows: list[Any], per_language: bool, where: str) -> dict[str, tuple[int, int]]:
    """{term in its matching form: (matched, kept)} of `rows` ({term, matched, kept}): a term listed once per language
    (`per_language`: a `lang` column) sums its languages' rows; a term twice otherwise, or a count that is not a whole
    number, is one line naming `where`."""
    counts: dict[str, tuple[int, int]] = {}
    seen: set[tuple[str, Any]] = set()
    for row in rows:
        if not isinstance(row, dict) or not row.get("term"):
            continue
        pair = (row.get("matched"), row.get("kept"))
        if not all(_whole(value) for value in pair):
            raise ClipModuleError(f"{where}: query {row['term']!r} has no whole counts (matched {pair[0]!r}, "
                                  f"kept {pair[1]!r})")
        key = boundary_key(str(row["term"]))
        if (key, row.get("lang") if per_language else None) in seen:
            raise ClipModuleError(f"{where}: query {row['term']!r} is listed twice" + (
                f" for language {row.get('lang')!r}" if per_language else " (in its matching form) and there is no "
                "lang column to tell its rows apart"))
        seen.add((key, row.get("lang") if per_language else None))
        before = counts.get(key, (0, 0))
        counts[key] = (before[0] + int(pair[0]), before[1] + int(pair[1]))
    return counts


def class_counts(card: Path, work_dir: str | None, names: list[str]) -> dict[str, Any]:
    """Each class name's training captions, before and after balancing: counted in the captions of the card's
    curation folder (`matched/`, `balanced/`) when they are there; else read from the counts per query the balance
    stage kept beside them (`balanced.counts.parquet`: a class name that is not a query has no count there, None);
    else (or when the card names no curation folder) from the card's own head (its most matched queries: the class
    names below it have no count); a term listed in several languages sums them; a class
    list none of these counts is one line naming what is missing. {matched, kept (None: no balanced captions),
    source}."""
    candidates = _work_candidates(card, work_dir, required=False)
    for folder in candidates:
        if (folder / MATCHED).is_dir():
            balanced = folder / BALANCED
            return {"matched": count_matches(names, captions(folder / MATCHED)), "source": "captions",
                    "kept": count_matches(names, captions(balanced)) if balanced.is_dir() else None}
    counts, source = None, "query counts"
    for folder in candidates:
        if (folder / BALANCE_COUNTS).is_file():
            counts = query_counts(folder / BALANCE_COUNTS)
            break
    if counts is None:  # the card's own head: its most matched queries, nothing below them
        head = (_read_json(card, "data card").get("balance") or {}).get("head") or []
        per_language = any(isinstance(entry, dict) and "lang" in entry for entry in head)
        counts, source = summed_counts(head, per_language, f"{card} (balance.head)"), "card head"
    found = [counts.get(boundary_key(name)) for name in names]
    if all(pair is None for pair in found):
        where = candidates[0] if candidates else card
        raise ClipModuleError(f"{where}: the card's curation folder holds neither its matched/ captions nor "
                              f"its {BALANCE_COUNTS}, and no class name is among the card's {len(counts)} most "
                              "matched queries; pass --work_dir")
    return {"matched": [pair and pair[0] for pair in found], "kept": [pair and pair[1] for pair in found],
            "source": source}


def captions(folder: Path) -> list[str]:
    """The `caption` column of every parquet file in `folder`, in name order."""
    import pyarrow.parquet as pq

    files = sorted(folder.glob("*.parquet"))
    if not files:
        raise ClipModuleError(f"{folder}: no parquet files")
    texts: list[str] = []
    for path in files:
        try:
            texts.extend(text for text in pq.read_table(path, columns=["caption"])["caption"].to_pylist() if text)
        except (OSError, KeyError, ValueError) as error:
            raise ClipModuleError(f"{path}: cannot read its caption column ({str(error).splitlines()[0]})") from None
    return texts


def log_linear_fit(counts: list[int | None], recalls: list[float | None]) -> dict[str, float] | None:
    """Least squares recall = intercept + slope·log10(count) over the classes with a count and a recall, and the
    Pearson correlation; None with fewer than two distinct counts."""
    pairs = [(np.log10(count), recall) for count, recall in zip(counts, recalls)
             if count is not None and count > 0 and recall is not None]
    if len({x for x, _ in pairs}) < 2:
        return None
    x, y = np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])
    slope, intercept = np.polyfit(x, y, 1)
    r = float(np.corrcoef(x, y)[0, 1]) if np.std(y) > 0 else 0.0
    return {"slope": float(slope), "intercept": float(intercept), "pearson_r": r, "classes": len(pairs)}


def concept_report(result: dict[str, Any], before: list[str], after: list[str] | None, rare: int) -> dict[str, Any]:
    """`counts_report` on the counts of the class names in the captions `before` and `after` balancing."""
    names = result["classnames"]
    return counts_report(result, {"matched": count_matches(names, before), "source": "captions",
                                  "kept": count_matches(names, after) if after is not None else None}, rare)


def counts_report(result: dict[str, Any], counts: dict[str, Any], rare: int) -> dict[str, Any]:
    """Per-class counts before/after balancing (`class_counts`; None: unknown) beside the recall, the fit (on the
    counts the model trained on: after balancing when known) and the never/rarely shown classes."""
    names, matched, kept = result["classnames"], counts["matched"], counts["kept"]
    trained = kept if kept is not None else matched
    classes = [{"class": name, "matched": matched[i], **({"kept": kept[i]} if kept is not None else {}),
                "recall": result["recall"][i], **({"test_images": result["count"][i]} if result["count"] else {})}
               for i, name in enumerate(names)]
    return {"result": result["name"], "model": result["model"], "classes": classes,
            "fit": log_linear_fit(trained, result["recall"]), "fit_on": "kept" if kept is not None else "matched",
            "counted_in": counts.get("source", "captions"),
            "never": [name for name, count in zip(names, trained) if count == 0],
            "rare": [name for name, count in zip(names, trained) if count is not None and 0 < count < rare],
            "unknown": [name for name, count in zip(names, trained) if count is None], "rare_below": rare}


def _percent(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.1f}"


def _count(value: int | None) -> str:
    return "" if value is None else str(value)


def concept_markdown(report: dict[str, Any], card: Path) -> str:
    fit, on = report["fit"], report["fit_on"]
    lines = [f"# Concepts the data taught: {report['result']}", "",
             f"Model {report['model']}, trained on the data of {card}. Counts: training captions naming the class "
             "(curation's matching rule), matched before balancing and kept after"
             + {"captions": ".", "query counts": f" (from the balance stage's counts per query, {BALANCE_COUNTS}: "
                "the captions are gone; a class name that is not a query has no count).",
                "card head": " (from the card's head, its most matched queries: the curation folder is gone; the "
                "classes below the head have no count)."}[report.get("counted_in", "captions")], ""]
    if fit is None:
        lines.append("No fit: fewer than two distinct counts among the classes the data showed.")
    else:
        lines.append(f"Log-linear fit on the {on} counts over {fit['classes']} classes: recall = "
                     f"{100 * fit['intercept']:.1f} + {100 * fit['slope']:.1f} · log10(count) (percent), "
                     f"Pearson r = {fit['pearson_r']:.2f}.")
    lines += ["", f"Never shown: {', '.join(report['never']) or 'none'}.",
              f"Rarely shown (fewer than {report['rare_below']}): {', '.join(report['rare']) or 'none'}.",
              *([f"No count (not a query): {', '.join(report['unknown'])}."] if report.get("unknown") else []), "",
              "| class | matched | kept | recall (%) | test images |", "|---|---|---|---|---|"]
    for entry in sorted(report["classes"], key=lambda item: -(item.get("kept", item["matched"]) or -1)):
        lines.append(f"| {entry['class']} | {_count(entry['matched'])} | {_count(entry.get('kept'))} | "
                     f"{_percent(entry['recall'])} | {entry.get('test_images', '')} |")
    return "\n".join(lines) + "\n"


def concept_plot(report: dict[str, Any], path: Path) -> Path:
    """Recall against count (log scale; a class the data never showed sits at 0.5), the fitted line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    key = report["fit_on"]
    points = [(entry[key] or 0.5, 100 * entry["recall"], entry["class"]) for entry in report["classes"]
              if entry["recall"] is not None and entry[key] is not None]
    figure, axes = plt.subplots(figsize=(6.5, 4.5))
    axes.scatter([p[0] for p in points], [p[1] for p in points], s=18)
    for x, y, name in points if len(points) <= 40 else []:
        axes.annotate(name, (x, y), fontsize=7, xytext=(3, 2), textcoords="offset points")
    if report["fit"] is not None and points:
        xs = np.logspace(0, np.log10(max(p[0] for p in points) + 1), 50)
        axes.plot(xs, 100 * (report["fit"]["intercept"] + report["fit"]["slope"] * np.log10(xs)), color="C1")
    axes.set_xscale("log")
    axes.set_xlabel(f"training captions naming the class ({key}; never shown at 0.5)")
    axes.set_ylabel("zero-shot recall (%)")
    axes.set_title(f"Concept frequency vs zero-shot recall: {report['result']}", fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
