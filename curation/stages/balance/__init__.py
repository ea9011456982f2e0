"""`curation balance`: keep at most t rows per query in expectation (MetaCLIP's balancing)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from curation.config import BalanceConfig
from curation.stages.spec import BuildStep, StageSpec


@dataclass
class BalancePaths:
    input: Path = Path("work/matched")
    """Folder written by `curation match`."""
    out: Path = Path("work/balanced")
    """Folder for the balanced shards; <out>.counts.parquet (matched vs kept per query) and <out>.stats.json
    beside it."""
    overwrite: bool = False
    """Replace an output made with other settings (an up-to-date output is kept as it is)."""


def run(settings: BalanceConfig, paths: BalancePaths) -> None:
    from curation.stages.balance.balancing import run_balance

    run_balance(settings, paths.input, paths.out, paths.overwrite)


def build(step: BuildStep) -> None:
    from curation.stages.balance.balancing import run_balance

    run_balance(step.settings, step.outputs["match"], step.out, step.overwrite)


STAGE = StageSpec(name="balance", help="keep at most t rows per query in expectation", paths=BalancePaths,
                  settings=BalanceConfig, run=run, output="balanced", required=True, build=build)
