"""Errors a user can cause. The `curation` CLI prints them as one line and exits with code 2."""

from clipformats.errors import one_line  # noqa: F401 (re-exported: the one-line rule of both CLIs)


class CurationError(Exception):
    """Bad input: a missing file, a missing column, text that is not UTF-8, a bad config.

    The message names the input and the problem on one line, e.g.
    `captions/part-3.csv: column 'caption' has 2 empty (null) values, first at row 17`.
    """


class StageIncomplete(CurationError):
    """A stage stopped before accounting for every row (e.g. some download shards failed).

    Unlike other errors, what the stage wrote is kept: running it again resumes.
    """
