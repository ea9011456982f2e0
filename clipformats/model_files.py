"""The files of a model folder that clipmodule's checkpoint loader reads (`clipmodule.checkpoints.readers`): an
open_clip hub folder's config and weights, a Hugging Face `save_pretrained` folder's config, weights and
preprocessor config, a hub cache entry's snapshot, and the tokenizer files beside them. A fingerprint of a model
folder hashes these, not every file in it (caches, logs, other formats' copies)."""

from __future__ import annotations

from pathlib import Path

OPEN_CLIP_CONFIG = "open_clip_config.json"
OPEN_CLIP_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
HF_CONFIG = "config.json"
HF_PREPROCESSOR = "preprocessor_config.json"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt")


def snapshot(folder: Path) -> Path:
    """A hub cache entry's (`models--org--name`) snapshot: refs/main's, else its only one; else `folder`."""
    snapshots = folder / "snapshots"
    if not snapshots.is_dir():
        return folder
    ref = folder / "refs" / "main"
    if ref.is_file() and (snapshots / ref.read_text().strip()).is_dir():
        return snapshots / ref.read_text().strip()
    revisions = sorted(child for child in snapshots.iterdir() if child.is_dir())
    return revisions[0] if len(revisions) == 1 else folder


def model_files(folder: str | Path) -> list[Path]:
    """The files the loader reads from model folder `folder`; a folder of neither layout: all its files (the
    loader refuses it)."""
    root = snapshot(Path(folder))
    if (root / OPEN_CLIP_CONFIG).is_file():
        read = [root / OPEN_CLIP_CONFIG, *[root / n for n in OPEN_CLIP_WEIGHTS if (root / n).is_file()][:1]]
    elif (root / HF_CONFIG).is_file():
        weights = sorted(root.glob("model*.safetensors")) or sorted(root.glob("pytorch_model*.bin"))
        read = [root / HF_CONFIG, *weights, *([root / HF_PREPROCESSOR] if (root / HF_PREPROCESSOR).is_file() else [])]
    else:
        return sorted(p for p in Path(folder).rglob("*") if p.is_file())
    return read + [root / name for name in TOKENIZER_FILES if (root / name).is_file()]
