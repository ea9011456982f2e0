"""Errors a user can cause. The CLIs print them as one line and exit with code 2."""


class ClipModuleError(Exception):
    """Bad input: a missing file, an unknown model name, a checkpoint that does not fit, a bad config."""
