"""What every stage shares: its stats file, resume-or-skip decisions, clean-up after bad input.

A stage writes `<out>` (a file or a folder) and, beside it, `<out>.stats.json`. The stats file is written
first with `"finished": false` and the stage's fingerprint (the settings and input files that decide its
output), and rewritten with the results at the end. So on a re-run:

* finished, same fingerprint → nothing to do (the old stats are returned);
* unfinished, same fingerprint → resume: finished pieces are kept, the rest is redone;
* different fingerprint → refuse, unless `overwrite` (then the old output is removed first: only what this
  stage makes, by the `made` name patterns; anything else inside `out` stops the overwrite).

Before anything is read or written, a stage refuses an output that is, contains or lies inside one of its
inputs, and an output of another stage. A run holds `<out>.lock` (see `clipformats.locks`) from the
start to the end: a second run on the same output stops with one line naming the holder. Every run removes
the hidden temporaries (`.<name>.tmp-<pid>`) that killed runs left in and beside `out`.

Bad input (`CurationError`) in a fresh run removes everything the run wrote; in a resumed run it removes
what this run added. An interruption or `StageIncomplete` keeps finished pieces for the next run.

A stage asks `finished()` (a pure check) and, when there is work, runs inside `running()`, which first
prepares `out` (`start()`: resume, refuse or clear it) and writes the unfinished stats.
"""

from __future__ import annotations

import contextlib
import fnmatch
import glob
import json
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from clipformats.files import TEMP_MARK, disk_full, sha256_file, write_json
from clipformats.locks import OutputLock, OutputLocked
from curation.errors import CurationError, StageIncomplete


def sidecar(out: Path, suffix: str) -> Path:
    """A file beside a stage's output: `work/matched` + `.stats.json` → `work/matched.stats.json`, and
    `work/queries.parquet` + `.stats.json` → `work/queries.stats.json`."""
    out = Path(out)
    stem = out.name[: -len(out.suffix)] if out.suffix == ".parquet" else out.name
    return out.with_name(stem + suffix)


def stats_path(out: Path) -> Path:
    return sidecar(out, ".stats.json")


def read_json(path: Path, what: str = "file") -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        raise CurationError(f"{path}: {what} not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CurationError(f"{path}: cannot read {what} ({error})") from None


def file_signature(paths: list[Path]) -> list[dict[str, Any]]:
    """Name, size and modification time of each input: cheap, and changes whenever a file is rewritten."""
    return [{"path": str(p), "bytes": p.stat().st_size, "mtime_ns": p.stat().st_mtime_ns} for p in paths]


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _first_difference(old: Any, new: Any, where: str = "") -> str:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new)):
            if old.get(key) != new.get(key):
                return _first_difference(old.get(key), new.get(key), f"{where}.{key}" if where else key)
    if where.startswith("inputs"):
        return "its input files changed"
    return f"{where}: {json.dumps(old)} → {json.dumps(new)}"


def _relation(output: Path, source: Path) -> str | None:
    """How an output path sits against an input path: 'is', 'contains', 'lies inside', or None (apart)."""
    output, source = output.resolve(), source.resolve()
    if output == source:
        return "is"
    if output in source.parents:
        return "contains"
    if source in output.parents:
        return "lies inside"
    return None


class Stage:
    """One run of one stage over `out`; see the module docstring for the rules.

    `inputs`: the files and folders the stage reads (refused as outputs); `made`: name patterns of what the
    stage writes inside a folder `out` (what `overwrite` may remove)."""

    def __init__(self, name: str, out: Path, fingerprint: dict[str, Any], overwrite: bool = False,
                 extra_outputs: tuple[Path, ...] = (), inputs: tuple[Path, ...] = (),
                 made: tuple[str, ...] = ("*.parquet",)):
        self.name, self.out = name, Path(out)
        self.stats_file = stats_path(self.out)
        self.fingerprint = _plain(fingerprint)
        self.overwrite = overwrite
        self.extra_outputs = tuple(Path(p) for p in extra_outputs)
        self.made = made
        self.fresh = True
        self._created: list[Path] = []
        self._check_paths(tuple(Path(p) for p in inputs))
        self.lock = OutputLock(sidecar(self.out, ".lock"), f"curation {name}")

    def _check_paths(self, inputs: tuple[Path, ...]) -> None:
        """Refuse, before touching anything, an output that would overwrite an input or cannot be made."""
        for output in (self.out, self.stats_file, *self.extra_outputs):
            for source in inputs:
                if (relation := _relation(output, source)) is not None:
                    raise CurationError(f"{self.out}: this output {relation} the input {source}; "
                                        f"choose an output apart from the inputs")
        existing = next((p for p in self.out.parents if p.exists()), None)
        if existing is not None and not existing.is_dir():
            raise CurationError(f"{self.out}: cannot be created: {existing} is a file, not a folder")

    def finished(self) -> dict[str, Any] | None:
        """The old stats if this exact stage already finished, else None. Reads only."""
        if not self.stats_file.exists():
            return None
        old = read_json(self.stats_file, f"{self.name} stats")
        return old if old.get("fingerprint") == self.fingerprint and old.get("finished") else None

    def start(self) -> None:
        """Prepare `out` for this run: resume an unfinished run of the same settings (its stale temporary
        files removed), refuse other settings (or, with overwrite, remove their outputs), refuse a foreign
        `out`; then write the unfinished stats. Refusals change nothing."""
        if self.stats_file.exists():
            old = read_json(self.stats_file, f"{self.name} stats")
            if old.get("stage") != self.name:  # never removed, even with overwrite: another stage made it
                raise CurationError(f"{self.out}: made by `curation {old.get('stage', '?')}`, not `{self.name}`; "
                                    f"choose another output")
            if old.get("fingerprint") == self.fingerprint:
                self.fresh = False
                self._remove_stale_temporaries()
                return
            if not self.overwrite:
                change = _first_difference(old.get("fingerprint", {}), self.fingerprint)
                raise CurationError(f"{self.out}: made by an earlier `{self.name}` with other settings ({change}); "
                                    f"pass --overwrite to rebuild it, or choose another output")
            self._remove_outputs(strict=True)
        elif self.out.exists() and not (self.out.is_dir() and not any(self.out.iterdir())):
            # not made by a stage (no stats beside it): never removed, even with overwrite
            raise CurationError(f"{self.out}: already exists and has no {self.stats_file.name} beside it; "
                                f"remove it or choose another output")
        self._remove_stale_temporaries()
        self.out.parent.mkdir(parents=True, exist_ok=True)
        write_json(self.stats_file, {"stage": self.name, "finished": False, "fingerprint": self.fingerprint})

    def created(self, path: Path) -> None:
        """Record a file this run wrote, so bad input later in the run can take it back."""
        self._created.append(Path(path))

    def record_output(self, result: dict[str, Any]) -> None:
        """`created` for a job result that says it wrote `out/<name>` (`"created": true`)."""
        if result.get("created"):
            self.created(self.out / result["name"])

    @contextlib.contextmanager
    def running(self) -> Iterator[Stage]:
        """Lock `out`, `start()`, then the run; bad input in the run takes back what it wrote (see the module
        docstring). The lock is released however the run ends."""
        self._take_lock()
        try:
            self.start()  # outside the inner try: a refusal must not remove what it refused to touch
            try:
                yield self
            except StageIncomplete:
                raise
            except CurationError:
                self._take_back()
                raise
        except OSError as error:
            if not disk_full(error):
                raise
            # finished pieces are kept (atomic writes leave no partial one): the same command resumes
            raise StageIncomplete(f"{error.filename or self.out}: no space left on device; free space and run "
                                  f"`curation {self.name}` again to resume (finished pieces are kept)") from None
        finally:
            self.lock.release()

    def _take_lock(self) -> None:
        try:
            self.out.parent.mkdir(parents=True, exist_ok=True)
            self.lock.acquire()
        except OutputLocked as error:
            raise CurationError(f"{self.out}: {error}") from None
        except OSError as error:
            raise CurationError(f"{self.out}: cannot take its lock ({error.strerror or error})") from None

    def finish(self, results: dict[str, Any]) -> dict[str, Any]:
        stats = {"stage": self.name, "finished": True, "fingerprint": self.fingerprint, **_plain(results)}
        write_json(self.stats_file, stats)
        return stats

    def amend(self, what: str, facts: Callable[[dict[str, Any]], dict[str, Any]]) -> dict[str, Any]:
        """Add `facts(stats)` to this finished output's stats (what later versions record, e.g. a row identity;
        `what` names it), holding the lock; one line when the lock, the outputs or the stats cannot be read or
        written."""
        self._take_lock()
        try:
            current = self.finished()
            if current is None:
                raise CurationError(f"{self.stats_file}: changed while `{self.name}` read it; run it again")
            stats = {**current, **_plain(facts(current))}
            write_json(self.stats_file, stats)
            return stats
        except OSError as error:
            raise CurationError(f"{error.filename or self.stats_file}: cannot record {what} in "
                                f"{self.stats_file.name} ({error.strerror or error}); fix it and run "
                                f"`curation {self.name}` again") from None
        finally:
            self.lock.release()

    def _remove_stale_temporaries(self) -> None:
        """The names `atomic_path` writes to, left by killed runs (safe: this run holds the lock)."""
        stale = list(self.out.glob(f".*{TEMP_MARK}*")) if self.out.is_dir() else []
        for path in (self.out, self.stats_file, *self.extra_outputs):
            if path.parent.is_dir():
                stale += path.parent.glob(f".{glob.escape(path.name)}{TEMP_MARK}*")
        for path in stale:
            if path.is_file():
                path.unlink()

    def _take_back(self) -> None:
        for path in self._created:
            if path.is_file():
                path.unlink()
        if self.fresh:
            self._remove_outputs(strict=False)

    def _made_here(self, path: Path) -> bool:
        return TEMP_MARK in path.name or any(fnmatch.fnmatch(path.name, pattern) for pattern in self.made)

    def discard_made(self) -> None:
        """Remove what this stage made inside a folder `out`, keeping the folder and its stats."""
        for path in self.out.iterdir() if self.out.is_dir() else ():
            if self._made_here(path):
                shutil.rmtree(path) if path.is_dir() else path.unlink()

    def _remove_outputs(self, strict: bool) -> None:
        """Remove `out` (only what this stage makes: `strict` refuses anything else first), its sidecars and
        stats."""
        if self.out.is_dir():
            foreign = sorted(p for p in self.out.iterdir() if not self._made_here(p))
            if foreign and strict:
                raise CurationError(f"{foreign[0]}: not made by `{self.name}`, so --overwrite does not remove it; "
                                    f"move it away or choose another output")
            self.discard_made()
            if not foreign:
                self.out.rmdir()
        elif self.out.exists():
            self.out.unlink()
        for path in (*self.extra_outputs, self.stats_file):
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()


class HashCache:
    """`sha256(path)`: from the cache when the file's size, mtime and ctime (which no copy preserves) are the ones
    recorded, else read (and recorded; `save()` writes the cache atomically, or not at all where it cannot).
    Side inputs (embeddings, models, class lists) are then read once, not on every run of an up-to-date stage."""

    def __init__(self, file: Path | None = None):
        self.file, self.changed = file, False
        self.entries: dict[str, dict] = {}
        if file is not None:
            try:
                found = json.loads(Path(file).read_text(encoding="utf-8"))
                self.entries = found if isinstance(found, dict) else {}
            except (OSError, ValueError):
                self.entries = {}  # none yet, or unreadable: hashed again

    def sha256(self, path: str | Path) -> str:
        key, stat = os.path.abspath(path), os.stat(path)
        entry = self.entries.get(key)
        seen = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "ctime_ns": stat.st_ctime_ns}
        if isinstance(entry, dict) and {k: entry.get(k) for k in seen} == seen and "sha256" in entry:
            return entry["sha256"]
        digest = sha256_file(path)
        self.entries[key] = {**seen, "sha256": digest}
        self.changed = True
        return digest

    def save(self) -> None:
        if self.file is None or not self.changed:
            return
        try:
            Path(self.file).parent.mkdir(parents=True, exist_ok=True)
            write_json(self.file, self.entries)
            self.changed = False
        except OSError:
            pass  # a cache only: the next run hashes again
