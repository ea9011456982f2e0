"""One pixel limit wherever curation decodes an image, so a decompression bomb (a small file that decodes to
gigabytes: a 30000x30000 PNG is 2.7 GB of RGB) is counted as a failure instead of filling memory.

The limit is checked from the image header, before any pixel is decoded. The default equals PIL's own
(`PIL.Image.MAX_IMAGE_PIXELS`, about 89 megapixels: 0.25 GiB at 3 bytes per pixel); stages take it as a
setting (`--max_image_pixels`). PIL is imported only when an image is opened.
"""

from __future__ import annotations

import io
import warnings
from typing import IO, Any

MAX_IMAGE_PIXELS = 89_478_485
"""Default limit in pixels (width x height), PIL's default."""


class ImageTooLarge(ValueError):
    """An image whose header says it has more pixels than the limit."""


def too_large_reason(limit: int) -> str:
    """The failure reason counted for an image over `limit` (fixed text: it is a key of the failure counts)."""
    return f"image over the pixel limit ({limit:,} pixels)"


def open_image(data: bytes | IO[bytes], limit: int = MAX_IMAGE_PIXELS) -> Any:
    """A lazily decoded `PIL.Image` of encoded bytes (or a binary stream), `ImageTooLarge` when its header
    says width x height > `limit`. PIL's own errors (unreadable data) pass through."""
    from PIL import Image

    if Image.MAX_IMAGE_PIXELS is not None and limit > Image.MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = limit  # PIL must not refuse below our limit; above it, we refuse first
    stream = io.BytesIO(data) if isinstance(data, (bytes, bytearray, memoryview)) else data
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(stream)
    except Image.DecompressionBombError:
        raise ImageTooLarge(too_large_reason(limit)) from None
    width, height = image.size
    if width * height > limit:
        image.close()
        raise ImageTooLarge(too_large_reason(limit))
    return image
