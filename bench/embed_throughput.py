"""Samples/s of `curation embed` against a plain embedding loop on the same shards and model.

    .venv/bin/python bench/embed_throughput.py [--model small-vit] [--shards 4] [--samples 200] [--threads 2]

The peer would be clip-retrieval's `inference`, but it does not install here: clip-retrieval 2.45 pins
numpy<2 and pyarrow<16 (this environment has numpy 2 and pyarrow 25, which torch and the rest need), and it
loads models by name through clip/open_clip downloads (no internet here). So the comparison is with what its
inference does at heart, written as plainly as possible: webdataset's tar reader, PIL decode, the model's
preprocess, `encode_image`/`encode_text` in batches, L2-normalise, `np.save` per shard. Both run in this
process, one after the other, each twice (the best run counts), on the same randomly initialised model
(`create_model(--model)` saved to a checkpoint: weights do not change the speed) and the same shards.
The two outputs are checked to agree (same keys, embeddings within fp16 rounding) before any timing is shown.
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import webdataset as wds
from PIL import Image

import clipmodule
from clipformats.embeddings import normalise, read_embeddings
from clipmodule.data.synthetic import write_synthetic_shards
from clipmodule.embedding import text_tokenizer
from curation.config import EmbedConfig
from curation.stages.embed.embedding import run_embed


def plain_loop(model_path: Path, shards: list[Path], out: Path, batch_size: int) -> int:
    """clip-retrieval's inference in a few lines: read, decode, preprocess, encode, normalise, save per shard."""
    model, preprocess = clipmodule.load(model_path)
    tokenizer = text_tokenizer(model)
    out.mkdir(parents=True, exist_ok=True)
    total = 0
    for shard in shards:
        images, texts, keys = [], [], []
        for sample in wds.WebDataset(str(shard), shardshuffle=False):
            keys.append(sample["__key__"])
            images.append(preprocess(Image.open(io.BytesIO(sample["jpg"])).convert("RGB")))
            texts.append(sample["txt"].decode().strip())
        image_rows, text_rows = [], []
        with torch.inference_mode():
            for start in range(0, len(images), batch_size):
                batch = torch.stack(images[start : start + batch_size])
                image_rows.append(model.encode_image(batch, normalize=True).numpy())
                tokens = tokenizer(texts[start : start + batch_size])
                text_rows.append(model.encode_text(tokens, normalize=True).numpy())
        np.save(out / f"img_{shard.stem}.npy", normalise(np.concatenate(image_rows)).astype(np.float16))
        np.save(out / f"txt_{shard.stem}.npy", normalise(np.concatenate(text_rows)).astype(np.float16))
        (out / f"keys_{shard.stem}.txt").write_text("\n".join(keys))
        total += len(keys)
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="small-vit", help="registered architecture (random weights)")
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--samples", type=int, default=200, help="samples per shard")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (both sides)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    root = Path(tempfile.mkdtemp(prefix="embed_bench_"))
    model_path = root / "model.safetensors"
    clipmodule.save_checkpoint(clipmodule.create_model(args.model), model_path)
    image_size = clipmodule.create_model(args.model).config.vision.image_size
    shards = write_synthetic_shards(root / "shards", args.shards, args.samples, image_size=image_size)
    samples = args.shards * args.samples
    times: dict[str, list[float]] = {"curation embed": [], "plain loop": []}
    for repeat in range(2):
        started = time.perf_counter()
        config = EmbedConfig(model=str(model_path), batch_size=args.batch_size, threads=args.threads)
        run_embed(config, [str(root / "shards")], root / f"emb{repeat}")
        times["curation embed"].append(time.perf_counter() - started)
        started = time.perf_counter()
        assert plain_loop(model_path, shards, root / f"plain{repeat}", args.batch_size) == samples
        times["plain loop"].append(time.perf_counter() - started)
    metadata, ours = read_embeddings(root / "emb0", "image")
    theirs = np.concatenate([np.load(root / "plain0" / f"img_{s.stem}.npy") for s in shards]).astype(np.float32)
    keys = [k for s in shards for k in (root / "plain0" / f"keys_{s.stem}.txt").read_text().split("\n")]
    assert metadata["key"].to_pylist() == keys and np.abs(ours - theirs).max() < 2e-3
    print(f"{samples} samples ({args.shards} shards x {args.samples}), model {args.model} at {image_size}px, "
          f"batch {args.batch_size}, {args.threads} torch threads; best of 2 runs, model load included")
    for name, seconds in times.items():
        print(f"  {name:<15} {samples / min(seconds):8.1f} samples/s  ({min(seconds):.2f} s)")
    ratio = min(times["plain loop"]) / min(times["curation embed"])
    print(f"  curation embed / plain loop: {ratio:.2f}x the speed")


if __name__ == "__main__":
    main()
