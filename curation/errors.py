"""Errors a user can cause. The `curation` CLI prints them as one line and exits with code 2."""

# Stdlib only: `clipmodule.errors.one_line` is this same function.


class CurationError(Exception):
    """Bad input: a missing file, a missing column, text that is not UTF-8, a bad config.

    The message names the input and the problem on one line, e.g.
    `captions/part-3.csv: column 'caption' has 2 empty (null) values, first at row 17`.
    """


class StageIncomplete(CurationError):
    """A stage stopped before accounting for every row (e.g. some download shards failed).

    Unlike other errors, what the stage wrote is kept: running it again resumes.
    """


TRACEBACK_MARKS = ("Traceback (most recent call last)", "Original Traceback")


def one_line(error: BaseException | str) -> str:
    """A traceback's last line without its exception type (the original error, as a worker reports it);
    anything else's first non-empty line."""
    text = str(error)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return type(error).__name__ if isinstance(error, BaseException) else "no message"
    if any(mark in text for mark in TRACEBACK_MARKS):
        last = lines[-1]
        kind, _, message = last.partition(": ")
        return message if message and kind.replace(".", "").replace("_", "").isalnum() else last
    return lines[0]
