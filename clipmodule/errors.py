"""Errors a user can cause. The CLIs print them as one line and exit with code 2."""

from __future__ import annotations


class ClipModuleError(Exception):
    """Bad input: a missing file, an unknown model name, a checkpoint that does not fit, a bad config."""


def one_line(error: BaseException | str) -> str:
    """The message a user needs, on one line: a DataLoader worker's wrapped traceback gives its last line
    (the original error), anything else its first non-empty line."""
    text = str(error).strip()
    if "Original Traceback" in text:
        last = text.splitlines()[-1]
        return last.split(": ", 1)[1] if ": " in last else last
    if not text:
        return type(error).__name__ if isinstance(error, BaseException) else "unknown error"
    return text.splitlines()[0].strip()
