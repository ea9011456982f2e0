"""`curation download`: the balanced rows' images, downloaded by img2dataset into shards."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from curation.config import DownloadConfig
from curation.stages.spec import BuildStep, StageSpec


@dataclass
class DownloadPaths:
    input: Path = Path("work/balanced")
    """Folder written by `curation balance`."""
    out: Path = Path("work/shards")
    """Folder for img2dataset's shards; <out>.stats.json (totals) and <out>.log (img2dataset's output) beside it."""
    overwrite: bool = False
    """Replace an output made with other settings (an up-to-date output is kept as it is)."""
    retry_failed: bool = False
    """After a finished download: fetch again only the rows that failed for a reason that may pass (timeouts,
    refused connections, 5xx, 408, 429; not 404s or refused URLs), into new shards counted in the same stats."""


def run(settings: DownloadConfig, paths: DownloadPaths) -> None:
    from curation.stages.download.downloading import run_download

    run_download(settings, paths.input, paths.out, paths.overwrite, paths.retry_failed)


def build(step: BuildStep) -> None:
    from curation.stages.download.downloading import run_download

    if step.settings.from_matched:  # the card accounts balance → download: a build downloads the balanced rows
        from curation.errors import CurationError

        raise CurationError(f"download.from_matched: `curation build` downloads the balanced rows; download the "
                            f"matched ones with `curation download --input {step.outputs['match']} --from_matched "
                            f"--save_columns query_ids`")
    run_download(step.settings, step.outputs["balance"], step.out, step.overwrite)


STAGE = StageSpec(name="download", help="download the balanced rows' images with img2dataset", paths=DownloadPaths,
                  settings=DownloadConfig, run=run, output="shards", required=True, build=build, writes_shards=True)
