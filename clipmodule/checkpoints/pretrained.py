"""open_clip's pretrained tags, `(name, tag)` -> a Hugging Face hub repo, resolved in the local hub cache only.

The table is data (`assets/open_clip_pretrained.json`, from open_clip 3.3's `pretrained.py`: repo, file, eval
preprocessing, QuickGELU, plus the licence each release states on its model card). A tag is found in the cache
laid out as `huggingface_hub` writes it (`$HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`:
`models--org--name/refs/main` naming a `snapshots/<revision>/` folder); nothing is ever downloaded, and a tag that
is not there is one line naming the repo to fetch and where it goes.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from clipmodule.checkpoints.preprocess import Preprocess
from clipmodule.errors import ClipModuleError

PRETRAINED_FILE = Path(__file__).resolve().parent.parent / "assets" / "open_clip_pretrained.json"
DEFAULT_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


@dataclasses.dataclass(frozen=True)
class PretrainedTag:
    """One released weight set: open_clip's model `name` trained as `tag`, stored in the hub `repo`."""

    name: str
    tag: str
    repo: str
    file: str | None
    """The weight file in the repo; None: open_clip's default (open_clip_model.safetensors, else the .bin)."""
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str
    resize_mode: str
    quick_gelu: bool
    licence: str

    def preprocess(self, image_size: int) -> Preprocess:
        return Preprocess(image_size, tuple(self.mean), tuple(self.std), self.interpolation, self.resize_mode)

    def candidate_files(self) -> tuple[str, ...]:
        """The files open_clip reads, safetensors first (as its download does)."""
        if self.file is None:
            return DEFAULT_FILES
        if self.file.endswith((".bin", ".pth")):
            return (self.file[:-4] + ".safetensors", self.file)
        return (self.file,)


def pretrained_tags() -> list[PretrainedTag]:
    """Every (name, tag) open_clip 3.3 knows, in its order."""
    rows = json.loads(PRETRAINED_FILE.read_text())
    return [PretrainedTag(**{**row, "mean": tuple(row["mean"]), "std": tuple(row["std"])}) for row in rows]


def clean_tag(tag: str) -> str:
    """open_clip's spelling rule: tags are case-insensitive and `-` means `_`."""
    return tag.lower().replace("-", "_")


def find_tag(name: str, tag: str) -> PretrainedTag:
    """The table's row for (name, tag); an unknown pair is one line listing the name's tags."""
    tags = pretrained_tags()
    for row in tags:
        if row.name == name and row.tag == clean_tag(tag):
            return row
    known = [row.tag for row in tags if row.name == name]
    if not known:
        raise ClipModuleError(f"{name!r} has no pretrained tags (open_clip releases none for it; "
                              "`clipmodule models --pretrained` lists every tag)")
    raise ClipModuleError(f"{name!r} has no pretrained tag {tag!r}; its tags: {', '.join(known)}")


def hub_cache_dir() -> Path:
    """Where huggingface_hub keeps downloaded repos (read from the environment at each call)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    cache = Path(os.environ["XDG_CACHE_HOME"]) if os.environ.get("XDG_CACHE_HOME") else Path.home() / ".cache"
    return cache / "huggingface" / "hub"


def repo_folder(repo: str, cache: Path | None = None) -> Path:
    """`models--org--name` in the hub cache."""
    return (cache or hub_cache_dir()) / ("models--" + repo.replace("/", "--"))


def _snapshot(folder: Path) -> Path | None:
    ref = folder / "refs" / "main"
    if ref.is_file():
        snapshot = folder / "snapshots" / ref.read_text().strip()
        return snapshot if snapshot.is_dir() else None
    snapshots = sorted(child for child in (folder / "snapshots").glob("*") if child.is_dir())
    return snapshots[0] if len(snapshots) == 1 else None


def cached_snapshot(repo: str, cache: Path | None = None) -> Path | None:
    """The `refs/main` snapshot folder of `repo` in the local hub cache (e.g. a tokenizer's repo), or None."""
    return _snapshot(repo_folder(repo, cache))


def local_file(row: PretrainedTag, cache: Path | None = None) -> Path | None:
    """The tag's weight file in the local hub cache (the `refs/main` snapshot), or None."""
    snapshot = _snapshot(repo_folder(row.repo, cache))
    if snapshot is None:
        return None
    return next((snapshot / file for file in row.candidate_files() if (snapshot / file).is_file()), None)


def resolve(name: str, tag: str) -> tuple[Path, PretrainedTag]:
    """(the local weight file, the table's row) for `name` trained as `tag`; never downloads."""
    row = find_tag(name, tag)
    found = local_file(row)
    if found is None:
        raise ClipModuleError(f"{name} pretrained={row.tag}: not in the local Hugging Face cache (nothing is "
                              f"downloaded here): fetch {row.repo} (`huggingface-cli download {row.repo}`; it needs "
                              f"{' or '.join(row.candidate_files())}); it goes to {repo_folder(row.repo)}")
    return found, row
