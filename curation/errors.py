"""Errors a user can cause. The `curation` CLI prints them as one line and exits with code 2."""


class CurationError(Exception):
    """Bad input: a missing file, a missing column, text that is not UTF-8, a bad config.

    The message names the input and the problem on one line, e.g.
    `captions/part-3.csv: column 'caption' has 2 empty (null) values, first at row 17`.
    """


class StageIncomplete(CurationError):
    """A stage stopped before accounting for every row (e.g. some download shards failed).

    Unlike other errors, what the stage wrote is kept: running it again resumes.
    """


def one_line(error: BaseException | str) -> str:
    """The line of an error message a user needs: a traceback's last line (how a worker process or a child
    reports the original error), anything else's first non-empty line."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if not lines:
        return type(error).__name__ if isinstance(error, BaseException) else "no message"
    return lines[-1] if "Traceback (most recent call last)" in str(error) else lines[0]
