"""Every test here keeps its shard-index cache in its own temporary folder, never in ~/.cache."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _private_index_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CLIPMODULE_CACHE", str(tmp_path / "cache"))
