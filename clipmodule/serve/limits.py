"""What the service accepts: bounded request bodies, queries and images, and files only under the folders it was
given. Every refusal is a `RequestError` (an HTTP status and one line), answered as JSON `{"error": ...}`."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Limits:
    """Bounds of one request."""

    max_body_bytes: int = 8 << 20
    """A request body (a base64 image inside JSON included) larger than this is refused (413)."""
    max_text_chars: int = 1000
    """Longest text query."""
    max_results: int = 1000
    """Most hits (`num_images`) or ids (`/metadata`) in one request."""
    max_image_pixels: int = 4096 * 4096
    """Largest query image (width x height, read from its header before decoding)."""


class RequestError(Exception):
    """A refused request: HTTP `status` and a one-line message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


async def read_body(request: Any, limit: int) -> bytes:
    """The request body, refused (413) past `limit` bytes: by its Content-Length, or while streaming it."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestError(413, f"request body of {int(declared):,} bytes, the limit is {limit:,}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise RequestError(413, f"request body over the limit of {limit:,} bytes")
    return bytes(body)


def decode_image(text: Any, limits: Limits) -> Any:
    """A base64 image (clip-retrieval's `image` field) as an RGB PIL image, in memory only (nothing written)."""
    from clipformats.images import ImageTooLarge
    from clipmodule.embedding import decode_image as decode_bytes

    if not isinstance(text, str):
        raise RequestError(400, "image: expected a base64 string")
    try:
        data = base64.b64decode(text.split(",", 1)[-1] if text.startswith("data:") else text, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError(400, "image: not valid base64") from None
    try:
        image = decode_bytes(data, limits.max_image_pixels)
    except ImageTooLarge:
        raise RequestError(413, f"image: over the limit of {limits.max_image_pixels:,} pixels") from None
    if image is None:
        raise RequestError(400, "image: cannot read it (not an image, or damaged)")
    return image


def file_under(root: Path, relative: str) -> Path:
    """`root/relative` when it is a file inside `root` (links resolved), else 403 (escaping) or 404 (absent)."""
    base = root.resolve()
    path = (base / relative).resolve()
    if not path.is_relative_to(base):
        raise RequestError(403, f"{relative}: outside the served folder")
    if not path.is_file():
        raise RequestError(404, f"{relative}: not found")
    return path
