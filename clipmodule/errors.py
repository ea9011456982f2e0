"""Errors a user can cause. The CLIs print them as one line and exit with code 2."""

from __future__ import annotations

from clipformats.errors import one_line  # one definition for both packages (stdlib only)

__all__ = ["ClipModuleError", "one_line"]


class ClipModuleError(Exception):
    """Bad input: a missing file, an unknown model name, a checkpoint that does not fit, a bad config."""
