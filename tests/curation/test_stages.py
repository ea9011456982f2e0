"""The stage registry: a stage declared once (in one module) is a subcommand, a step of `build` in its place, a
key of the dataset YAML and a section of the data card, with no other file touched."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import yaml

from clipformats.webdataset import expand_shards, recorded_samples
from curation.cli import help_text, main
from curation.errors import CurationError
from curation.stage import Stage, file_signature
from curation.stages import BuildStep, CardSection, StageSpec, dataset_config_type, registry
from curation.typed import from_mapping


@dataclass
class CountSettings:
    """Settings of the throwaway stage."""

    label: str = "samples"
    """Word the card uses for what was counted."""


@dataclass
class CountPaths:
    shards: str = "work/shards"
    """Shards to count."""
    out: Path = Path("work/counted")
    """Folder for the count."""
    overwrite: bool = False
    """Replace an output made with other settings."""


def count_samples(settings: CountSettings, shards: str, out: Path, overwrite: bool) -> dict[str, Any]:
    """A real (if tiny) stage: counts the samples of its input shards under the stage protocol."""
    paths = [Path(p) for p in expand_shards(shards)]
    stage = Stage("count", out, {"config": vars(settings), "inputs": file_signature(paths)}, overwrite,
                  inputs=tuple(paths))
    if (done := stage.finished()) is not None:
        return done
    with stage.running():
        return stage.finish({"samples": sum(recorded_samples(p) or 0 for p in paths), "label": settings.label})


def run(settings: CountSettings, paths: CountPaths) -> None:
    count_samples(settings, paths.shards, paths.out, paths.overwrite)


def build(step: BuildStep) -> None:
    count_samples(step.settings, str(step.shards), step.out, step.overwrite)


def markdown(section: dict[str, Any]) -> str:
    return f"## Counted\n\n{section['samples']} {section['label']} in the downloaded shards."


COUNT = StageSpec(name="count", help="count the samples of shards (a throwaway stage)", paths=CountPaths,
                  settings=CountSettings, run=run, output="counted", build=build,
                  card=CardSection("counted", lambda stats: {"samples": stats["samples"], "label": stats["label"]},
                                   markdown, summary=("counted_samples", "counted by the throwaway stage", "samples")))


@pytest.fixture
def count_stage():
    registry().register(COUNT, after="download")
    yield COUNT
    registry().unregister("count")
    assert "count" not in registry().names()


def test_a_registered_stage_is_a_subcommand_with_its_options(count_stage, capsys):
    text = help_text()
    assert "count the samples of shards (a throwaway stage)" in text
    assert text.index("download") < text.index("count the samples") < text.index("embed")
    with pytest.raises(SystemExit):
        main(["count", "--help"])
    assert "--label LABEL" in capsys.readouterr().out


def test_a_registered_stage_is_a_yaml_key_and_runs_in_build_and_is_on_the_card(
        count_stage, tmp_path, image_server, caption_table, monkeypatch):
    monkeypatch.setenv("NO_ALBUMENTATIONS_UPDATE", "1")
    work = tmp_path / "work"
    work.mkdir()
    captions = caption_table(image_server.base)
    pq.write_table(captions.slice(0, 24), tmp_path / "captions.parquet")  # the rows whose image downloads
    settings = {"name": "counted", "captions": [str(tmp_path / "captions.parquet")], "work_dir": str(work),
                "cards_dir": str(tmp_path / "cards"),
                "queries": {"wordnet": False, "unigrams": "wordfreq", "max_terms": 20000},
                "balance": {"t": 4}, "count": {"label": "pictures"},
                "download": {"image_size": 32, "processes": 1, "threads": 4, "retries": 0, "timeout": 5}}
    config = tmp_path / "counted.yaml"
    config.write_text(yaml.safe_dump(settings))

    assert main(["build", "-c", str(config)]) == 0

    stats = json.loads((work / "counted.stats.json").read_text())
    card = json.loads((tmp_path / "cards" / "counted.json").read_text())
    assert stats["finished"] and stats["samples"] == card["download"]["successes"] > 0
    assert card["counted"] == {"samples": stats["samples"], "label": "pictures"}
    assert card["summary"]["counted_samples"] == stats["samples"]
    assert [s["stage"] for s in card["lineage"]["stages"]] == ["count"]
    assert card["config"]["count"] == {"label": "pictures"}
    markdown_card = (tmp_path / "cards" / "counted.md").read_text()
    assert f"## Counted\n\n{stats['samples']} pictures in the downloaded shards." in markdown_card
    assert markdown_card.index("## Download") < markdown_card.index("## Counted") < markdown_card.index("## Shards")


def test_the_yaml_refuses_an_unregistered_stage_and_a_taken_name(count_stage, tmp_path):
    registry().unregister("count")
    with pytest.raises(CurationError, match="unknown setting 'count'"):
        from_mapping(dataset_config_type(), {"name": "x", "captions": ["c.parquet"], "count": {}}, "x.yaml")
    registry().register(COUNT, after="download")
    with pytest.raises(CurationError, match="already registered"):
        registry().register(COUNT)
    with pytest.raises(CurationError, match="unknown stage 'nosuch'"):
        registry().get("nosuch")
