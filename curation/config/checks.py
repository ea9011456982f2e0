"""The one check every setting uses: a one-line CurationError when a value is out of range."""

from __future__ import annotations

from curation.errors import CurationError


def require(condition: bool, message: str) -> None:
    if not condition:
        raise CurationError(message)
