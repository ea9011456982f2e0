"""The one-line rule both CLIs print errors by (stdlib only)."""

from __future__ import annotations

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
