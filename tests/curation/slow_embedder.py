"""An embedder plugin for the kill-and-resume test: the real `ShardEmbedder`, a fixed pause after each shard,
so a test can stop the process between shards (and sometimes while a part is being written)."""

from __future__ import annotations

import time

from clipformats.embeddings import ShardEmbeddings
from clipmodule.embedding import ShardEmbedder

PAUSE_SECONDS = 0.5


class SlowShardEmbedder(ShardEmbedder):
    def embed_shard(self, shard: str) -> ShardEmbeddings:
        time.sleep(PAUSE_SECONDS)
        return super().embed_shard(shard)


class InterruptedShardEmbedder(ShardEmbedder):
    """The real embedder, interrupted (as Ctrl-C would) when it starts shard number `stop_at` of this process;
    `stop_at = None` lets it run."""

    stop_at: int | None = None
    started = 0

    def embed_shard(self, shard: str) -> ShardEmbeddings:
        InterruptedShardEmbedder.started += 1
        if InterruptedShardEmbedder.stop_at == InterruptedShardEmbedder.started:
            raise KeyboardInterrupt
        return super().embed_shard(shard)
