"""Progress bars and one-line summaries on stderr (rich), so stdout stays free for data."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


def console() -> Console:
    return Console(stderr=True, highlight=False)


@contextlib.contextmanager
def progress_bar(description: str, total: float | None) -> Iterator[Callable[[float], None]]:
    """A bar for `total` units (None: unknown); yields `advance(units)`."""
    columns = [SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TimeRemainingColumn()]
    # Only on a terminal, and erased when done: in a log (stderr not a tty) a bar is a stale or blank line
    # printed before the stage's one-line summary or error.
    out = console()
    with Progress(*columns, console=out, transient=True, disable=not out.is_terminal) as bar:
        task = bar.add_task(description, total=total)
        try:
            yield lambda units: bar.advance(task, units)
        except BaseException:
            bar.update(task, visible=False)  # the error line alone says what happened
            raise


def report(message: str) -> None:
    """One summary line for a finished (or skipped) stage."""
    console().print(message, soft_wrap=True)
