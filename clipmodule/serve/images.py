"""Samples' images read from webdataset shards by (shard name, key), for thumbnails: only the shards the service
was given (a name it does not know is not found, so no request names a path), each shard's index parsed once."""

from __future__ import annotations

import io
import threading
from typing import Any

from clipformats.images import ImageTooLarge
from clipformats.webdataset import image_field
from clipmodule.data.shards import ShardCache
from clipmodule.embedding import decode_image

THUMBNAIL_SIDE = 256


class ShardImages:
    """`files`: shard name -> path."""

    def __init__(self, files: dict[str, str], capacity: int = 4) -> None:
        self.names = list(files)
        self._position = {name: number for number, name in enumerate(self.names)}
        self._cache = ShardCache([files[name] for name in self.names], capacity=capacity)
        self._keys: dict[str, dict[str, int]] = {}
        self._lock = threading.Lock()  # one file handle per shard: reads of the same shard take turns

    def image(self, shard: str, key: str) -> Any:
        """The sample's image (PIL), or None where the shard, the sample or its image is not at hand."""
        number = self._position.get(shard)
        if number is None:
            return None
        try:
            with self._lock:
                keys = self._keys.get(shard)
                if keys is None:
                    keys = self._keys[shard] = {name: n for n, name in enumerate(self._cache.index(number).keys)}
                if key not in keys:
                    return None
                fields = self._cache.read(number, keys[key])[1]
        except OSError:
            return None
        name = image_field(fields)
        try:
            return decode_image(fields[name]) if name is not None else None
        except ImageTooLarge:
            return None

    def thumbnail(self, shard: str, key: str) -> bytes | None:
        """The sample's image as a JPEG at most THUMBNAIL_SIDE pixels a side, or None."""
        image = self.image(shard, key)
        if image is None:
            return None
        image = image.convert("RGB")
        image.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
        out = io.BytesIO()
        image.save(out, format="JPEG", quality=85)
        return out.getvalue()

    def close(self) -> None:
        with self._lock:
            self._cache.close()
