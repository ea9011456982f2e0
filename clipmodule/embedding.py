"""`curation embed`'s model side: `ShardEmbedder` implements the plugin interface `clipformats.embeddings`
declares (curation loads it by class path, `clipmodule.embedding:ShardEmbedder`, and never imports clipmodule).

One shard is read in file order (the shard contract's keys and image field), every decodable image is
preprocessed as `clipmodule.load` says for the model, captions are tokenised at the model's context length
(truncated), and both go through `encode_image` / `encode_text` in batches; rows are L2-normalised.
`embed_text` / `embed_images` are the same maths for a query (`clipmodule search`).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from clipformats.embeddings import EmbedderError, ShardEmbeddings, model_hash, normalise
from clipformats.images import MAX_IMAGE_PIXELS, ImageTooLarge, open_image
from clipformats.webdataset import image_field
from clipmodule.api import get_tokenizer, load, local_weights, tokenize
from clipmodule.data.shards import ShardCache
from clipmodule.errors import ClipModuleError


def text_tokenizer(model: Any) -> Callable[[list[str]], torch.Tensor]:
    """The model's tokenizer, cutting captions longer than its context (a web caption may be any length)."""
    if model.config.text.tokenizer == "openai_bpe":
        return functools.partial(tokenize, context_length=model.config.text.context_length, truncate=True)
    return get_tokenizer(model)  # the Hugging Face tokenizer truncates at its context length itself


def decode_image(data: bytes, limit: int = MAX_IMAGE_PIXELS) -> Image.Image | None:
    """An RGB image of encoded bytes; None when they do not decode. `ImageTooLarge` passes through."""
    try:
        with open_image(data, limit) as image:
            image.load()
            return image.convert("RGB")
    except ImageTooLarge:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None


def _caption(fields: dict[str, bytes]) -> str:
    return fields["txt"].decode("utf-8", errors="replace").strip() if "txt" in fields else ""


def _url(fields: dict[str, bytes]) -> str | None:
    try:
        meta = json.loads(fields["json"]) if "json" in fields else None
    except (ValueError, UnicodeDecodeError):
        return None
    url = meta.get("url") if isinstance(meta, dict) else None
    return url if isinstance(url, str) else None


class ShardEmbedder:
    """Image and caption embeddings of webdataset shards with any model `clipmodule.load` reads."""

    def setup(self, model: str, device: str = "cpu", batch_size: int = 64, threads: int = 0,
              max_image_pixels: int = MAX_IMAGE_PIXELS) -> dict[str, Any]:
        if threads:
            torch.set_num_threads(threads)
        try:
            self.model, self.preprocess = load(model, device=device)
        except ClipModuleError as error:
            raise EmbedderError(f"model {model}: {error}") from None
        except RuntimeError as error:  # e.g. an unknown or absent device
            raise EmbedderError(f"model {model} on device {device!r}: {str(error).splitlines()[0]}") from None
        self.tokenizer = text_tokenizer(self.model)
        self.device, self.batch_size, self.max_image_pixels = torch.device(device), batch_size, max_image_pixels
        config = self.model.config
        # the weights' content, not their path, says which space the embeddings are in (`clipmodule search`)
        weights = Path(model) if Path(model).exists() else local_weights(model, "pass a checkpoint path")
        return {"embed_dim": config.embed_dim, "image_size": config.vision.image_size,
                "context_length": config.text.context_length, "tokenizer": config.text.tokenizer,
                "weights_sha256": model_hash(weights)}

    @torch.inference_mode()
    def embed_images(self, images: list[Image.Image]) -> np.ndarray:
        pixels = torch.stack([self.preprocess(image) for image in images]).to(self.device)
        return normalise(self.model.encode_image(pixels, normalize=True).float().cpu().numpy())

    @torch.inference_mode()
    def embed_text(self, texts: list[str]) -> np.ndarray:
        tokens = self.tokenizer(texts).to(self.device)
        return normalise(self.model.encode_text(tokens, normalize=True).float().cpu().numpy())

    def _samples(self, shard: str) -> Iterator[tuple[str, dict[str, bytes]]]:
        cache = ShardCache([shard], capacity=1)
        try:
            index = cache.index(0)
            if index.error is not None:
                raise EmbedderError(f"{shard}: corrupt or unreadable shard ({index.error})")
            for sample in range(len(index.keys)):
                try:
                    yield cache.read(0, sample)
                except OSError as error:
                    raise EmbedderError(f"{shard}: cannot read sample {index.keys[sample]} ({error})") from None
        finally:
            cache.close()

    def _usable_image(self, fields: dict[str, bytes]) -> tuple[Image.Image | None, str | None]:
        """(image, None) for a sample with a decodable image, else (None, why it has no row)."""
        if (name := image_field(fields)) is None:
            return None, "no image"
        try:
            image = decode_image(fields[name], self.max_image_pixels)
        except ImageTooLarge:
            return None, "image over the pixel limit"
        return (image, None) if image is not None else (None, "undecodable image")

    def embed_shard(self, shard: str) -> ShardEmbeddings:
        rows: dict[str, list[Any]] = {"key": [], "caption": [], "width": [], "height": [], "url": []}
        batch: list[Image.Image] = []
        image_parts, text_parts, skipped, samples = [], [], {}, 0

        def flush() -> None:
            image_parts.append(self.embed_images(batch))
            text_parts.append(self.embed_text(rows["caption"][-len(batch):]))
            batch.clear()

        for key, fields in self._samples(shard):
            samples += 1
            image, reason = self._usable_image(fields)
            if image is None:
                skipped[reason] = skipped.get(reason, 0) + 1
                continue
            for column, value in (("key", key), ("caption", _caption(fields)), ("width", image.width),
                                  ("height", image.height), ("url", _url(fields))):
                rows[column].append(value)
            batch.append(image)
            if len(batch) == self.batch_size:
                flush()
        if batch:
            flush()
        empty = np.zeros((0, self.model.config.embed_dim), np.float32)
        return ShardEmbeddings(rows, np.concatenate(image_parts) if image_parts else empty,
                               np.concatenate(text_parts) if text_parts else empty, samples, skipped)


def read_image_file(path: str) -> Image.Image:
    """A query image from disk, as one line naming it when it is missing or does not decode."""
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise ClipModuleError(f"{path}: cannot read image ({error.strerror or error})") from None
    try:
        image = decode_image(data)
    except ImageTooLarge as error:
        raise ClipModuleError(f"{path}: {error}") from None
    if image is None:
        raise ClipModuleError(f"{path}: not an image PIL can decode")
    return image


__all__ = ["ShardEmbedder", "decode_image", "read_image_file", "text_tokenizer"]
