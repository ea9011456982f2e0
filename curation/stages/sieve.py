"""What the sample-filter stages share (language, image_shape, in21k_text, unsafe): each decides every sample of
the input shards from its caption, sides and fields; the kept samples are copied byte for byte into shards of
the same names in `out`; the stats count samples per reason and show a few examples of each decision, and, given
a `truth` table (shard, key) of samples that should go (planted), the precision and recall of what went.

A stage gives a `Sieve`: a factory whose `build(shards)` returns the per-sample decision function (models load
there, once), so a resumed run re-decides only the shards it had not written.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any, Protocol

from curation.errors import CurationError
from curation.progress import progress_bar, report
from curation.stage import HashCache, Stage, file_signature, sidecar

EXAMPLES = 5

Decide = Callable[[dict[str, Any], list], str | None]
"""(sample meta: caption, width, height, shard (file name), key; its tar members) → None to keep, else the reason
it is dropped."""


class Sieve(Protocol):
    name: str

    def build(self, shards: list[Path]) -> Decide: ...

    def side_inputs(self, shards: list[Path], hashes: HashCache | None = None) -> dict[str, str | None]:
        """What else decides the samples (embeddings, a model, a class list) as {name: content hash}: part of the
        stage's fingerprint, so a re-embedded folder or an edited file re-runs the stage (`content_hash`, with
        `hashes` remembering each file's sha256 by size and mtime)."""
        ...


def content_hash(paths: list[Path], hashes: HashCache | None = None) -> str:
    """sha256 over the files' names and sha256s: changes with any byte of any of them, not with their paths."""
    from clipformats.curation_outputs import rows_identity

    return rows_identity(paths, hashes.sha256 if hashes is not None else None)


def side_inputs(sieve: Sieve, settings: Any, sources: list[Path], out: Path) -> dict[str, str | None]:
    """The sieve's side inputs and the truth table's, hashed through `<out>.hashes.json` (an unchanged file is not
    read again); a side input that cannot be read is a `CurationError`."""
    truth, hashes = getattr(settings, "truth", None), HashCache(sidecar(out, ".hashes.json"))
    try:
        side = {**sieve.side_inputs(sources, hashes),
                **({"truth": content_hash([truth], hashes)} if truth and truth.is_file() else {})}
    except OSError as error:
        raise CurationError(f"{error.filename or out}: cannot read ({error.strerror or error})") from None
    hashes.save()
    return side


def _deleted_side_input(settings: Any) -> bool:
    """Whether a file or folder the settings name (other than the truth table) is gone altogether."""
    return any(isinstance(value, Path) and not value.exists()
               for key, value in vars(settings).items() if key != "truth")


def _recorded_side_inputs(name: str, out: Path) -> dict[str, Any]:
    """The side inputs a finished output's fingerprint records (for one whose side inputs are gone since)."""
    from curation.stage import read_json, stats_path

    old = read_json(stats_path(out), f"{name} stats") if stats_path(out).is_file() else {}
    recorded = old.get("fingerprint", {}).get("side_inputs") if isinstance(old.get("fingerprint"), dict) else None
    return {"side_inputs": recorded} if recorded else {}


def run_sieve(sieve: Sieve, settings: Any, shards: list[str], out: Path, overwrite: bool = False) -> dict[str, Any]:
    """Decide every sample of `shards`; write the kept ones to `out/<shard>.tar`; stats with examples (and, when
    `settings.truth` names planted samples, precision and recall)."""
    from curation.embedding_rows import precision_recall, read_truth  # pyarrow: not at `curation --help`
    from curation.shardio import input_shards, sample_meta, shard_stem, tar_samples, write_subset

    out, sources, truth = Path(out), input_shards(shards, "input shards"), getattr(settings, "truth", None)
    fingerprint = {"config": asdict(settings), "inputs": file_signature(sources)}
    try:
        side = side_inputs(sieve, settings, sources, out)
    except CurationError:  # e.g. embeddings deleted after the stage finished: up to date as recorded, else refused
        gone = Stage(sieve.name, out, {**fingerprint, **_recorded_side_inputs(sieve.name, out)}, overwrite,
                     inputs=tuple(sources), made=("*.tar",))
        if not _deleted_side_input(settings) or not _recorded_side_inputs(sieve.name, out) \
                or (done := gone.finished()) is None:
            raise  # a side input there but incomplete (an interrupted re-embed) is never taken as the recorded one
        return _up_to_date(sieve.name, gone, done, sources, out)
    fingerprint.update({"side_inputs": side} if side else {})  # outputs made before side inputs stay valid
    stage = Stage(sieve.name, out, fingerprint, overwrite, inputs=tuple(sources), made=("*.tar",))
    if (done := stage.finished()) is not None:
        return _up_to_date(sieve.name, stage, done, sources, out)
    with stage.running():
        out.mkdir(parents=True, exist_ok=True)
        decide, reasons, examples, dropped = sieve.build(sources), Counter(), {"kept": []}, set()
        rows = 0
        with progress_bar(sieve.name, len(sources)) as advance:
            for source in sources:
                verdicts = {}
                for key, members in tar_samples(source):
                    meta = {**sample_meta(members), "shard": source.name, "key": key}
                    verdicts[key] = decide(meta, members)
                    _note(examples, verdicts[key], key, meta)
                rows += len(verdicts)
                reasons.update(v for v in verdicts.values() if v is not None)
                dropped.update((shard_stem(source), k) for k, v in verdicts.items() if v is not None)
                write_subset(source, out / source.name, lambda key, v=verdicts: v.get(key) is None)
                stage.created(out / source.name)
                advance(1)
        kept = rows - sum(reasons.values())
        stats = stage.finish({"rows_in": rows, "rows_kept": kept, "rows_dropped": rows - kept,
                              "dropped_by_reason": dict(reasons.most_common()), "examples": examples,
                              "settings": asdict(settings), "shards": [s.name for s in sources],
                              "truth": precision_recall(dropped, read_truth(truth)) if truth is not None else None,
                              **inherited_identity(sources)})
    report(f"{sieve.name}: kept {kept:,} of {rows:,} samples"
           + (f" (dropped: {', '.join(f'{n:,} {r}' for r, n in reasons.most_common())})" if reasons else "")
           + f" → {out}")
    return stats


def inherited_identity(sources: list[Path]) -> dict[str, str]:
    """The input shards' recorded row identity, passed on (a subset of a download is still of those rows:
    online curation checks it, `clipformats.curation_outputs`); empty when the inputs record none or several."""
    from clipformats.curation_outputs import ROWS_IDENTITY, recorded_identity

    found = {recorded_identity(folder) for folder in {source.parent for source in sources}}
    return {ROWS_IDENTITY: found.pop()} if len(found) == 1 and None not in found else {}


def _up_to_date(name: str, stage: Stage, done: dict[str, Any], sources: list[Path], out: Path) -> dict[str, Any]:
    done = backfill_identity(stage, done, sources)
    report(f"{name}: up to date ({done['rows_kept']:,} of {done['rows_in']:,} kept in {out})")
    return done


def backfill_identity(stage: Stage, done: dict[str, Any], sources: list[Path]) -> dict[str, Any]:
    """An up-to-date output made before stages passed the row identity on gains its inputs' (as `match` adds
    its own), so online curation accepts it without a rerun."""
    from clipformats.curation_outputs import ROWS_IDENTITY

    if ROWS_IDENTITY in done or not (inherited := inherited_identity(sources)):
        return done
    return stage.amend(ROWS_IDENTITY, lambda stats: inherited)


def _note(examples: dict[str, list], verdict: str | None, key: str, meta: dict[str, Any]) -> None:
    bucket = examples.setdefault("kept" if verdict is None else verdict, [])
    if len(bucket) < EXAMPLES:
        bucket.append({"key": key, "caption": meta.get("caption")})


def section(stats: dict[str, Any]) -> dict[str, Any]:
    return {k: stats.get(k) for k in ("rows_in", "rows_kept", "rows_dropped", "dropped_by_reason", "examples",
                                      "settings", "truth")}


def markdown(title: str) -> Callable[[dict[str, Any]], str]:
    """The card's section of a sieve stage: counts by reason, examples, settings, precision/recall."""
    from curation.card_markdown import table

    def render(s: dict[str, Any]) -> str:
        reasons = table(["dropped for", "samples"], [[r, n] for r, n in s["dropped_by_reason"].items()]) \
            if s["dropped_by_reason"] else "Nothing dropped."
        shown = table(["decision", "key", "caption"], [[d, e["key"], (e["caption"] or "")[:80]]
                                                       for d, found in s["examples"].items() for e in found])
        truth = s.get("truth")
        scored = (f" Against {truth['truth']:,} planted samples: precision {truth['precision']}, recall "
                  f"{truth['recall']}." if truth else "")
        settings = ", ".join(f"{k} = {v}" for k, v in s["settings"].items())
        return (f"## {title}\n\nKept {s['rows_kept']:,} of {s['rows_in']:,} samples ({settings}).{scored}\n\n"
                f"{reasons}\n\n### Examples\n\n{shown}")

    return render


def sieve_stage(name: str, help: str, paths: type, settings: type, sieve: Callable[[Any], Sieve], title: str,  # noqa: PLR0913
                label: str, needs: tuple[str, ...] = (), in_build: Callable[[Any, Any], Any] | None = None) -> Any:
    """The StageSpec of a sieve stage: run alone on `paths.shards`, or in `build` on the shards before it
    (`in_build(settings, step)`: the settings a build uses, e.g. with the build's embedding folder)."""
    from curation.stages.spec import BuildStep, CardSection, StageSpec

    def run(config: Any, options: Any) -> None:
        run_sieve(sieve(config), config, options.shards, options.out, options.overwrite)

    def build(step: BuildStep) -> None:
        config = step.settings if in_build is None else in_build(step.settings, step)
        run_sieve(sieve(config), config, [str(step.shards)], step.out, step.overwrite)

    return StageSpec(name=name, help=help, paths=paths, settings=settings, run=run, output=name, build=build,
                     writes_shards=True, needs=needs, card=CardSection(name, section, markdown(title),
                                                          summary=(f"{name}_images", label, "rows_kept")))
