"""Multilingual retrieval (XTD10) against CLIP_benchmark's own code, same model, data, loader settings and device:

    .venv/bin/python bench/multilingual_throughput.py [--model tiny-vit] [--items 1000] [--language de]
                                                      [--rounds 3] [--threads 2] [--batch-size 64] [--workers 2]

A copy in XTD10's release layout (Adobe's XTD10/test_image_names.txt, MIC/test_1kcaptions_de.txt, the images
in xtd10/images/ as 500x375 JPEGs) with the annotation file CLIP_benchmark's builder writes once it has fetched
them (`xtd10-<lang>.json`, so it reads the same files offline): `eval.suite.run_task` (task retrieval, dataset
xtd10, language) against `build_dataset("xtd10", language=...)` and `metrics.zeroshot_retrieval.evaluate`.
Timing, rounds and the check that both give the same recall@1/5/10 are `selection_throughput.compare`'s.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))

from selection_throughput import compare  # noqa: E402

CAPTION_FOLDER = {"de": "MIC", "fr": "MIC", "jp": "STAIR"}


def write_xtd10(root: Path, items: int, language: str, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    names = [f"COCO_val2014_{index:012d}.jpg" for index in range(items)]
    (root / "xtd10" / "images").mkdir(parents=True)
    for name in names:
        base = Image.fromarray(rng.integers(0, 255, size=(6, 8, 3), dtype=np.uint8)).resize((500, 375))
        base.save(root / "xtd10" / "images" / name, quality=90)
    captions = [f"ein Foto von Ding Nummer {index} in Farbe {index % 7}" for index in range(items)]
    (root / "XTD10").mkdir()
    (root / "XTD10" / "test_image_names.txt").write_text("\n".join(names) + "\n")
    folder = root / CAPTION_FOLDER.get(language, "XTD10")
    folder.mkdir(exist_ok=True)
    (folder / f"test_1kcaptions_{language}.txt").write_text("\n".join(captions) + "\n", encoding="utf-8")
    annotations = {"image_paths": [str(root / "xtd10" / "images" / name) for name in names],
                   "annotations": captions}
    (root / f"xtd10-{language}.json").write_text(json.dumps(annotations), encoding="utf-8")
    return root


def retrieval_pair(model, preprocess, root: Path, args) -> tuple:
    from clip_benchmark.datasets.builder import build_dataset, image_captions_collate_fn
    from clip_benchmark.metrics.zeroshot_retrieval import evaluate

    from clipmodule.api import tokenizer_spec
    from clipmodule.eval.options import LinearProbeOptions, LoaderOptions, TaskSpec
    from clipmodule.eval.suite import run_task

    spec = TaskSpec("retrieval", dataset="xtd10", root=str(root), language=args.language)
    loader = LoaderOptions(batch_size=args.batch_size, num_workers=args.workers, device=args.device)
    keys = [f"{direction}_R@{k}" for direction in ("image_to_text", "text_to_image") for k in (1, 5, 10)]

    def ours():
        return run_task(model, preprocess, spec, loader, LinearProbeOptions())

    def theirs():
        dataset = build_dataset("xtd10", root=str(root), transform=preprocess, language=args.language,
                                task="zeroshot_retrieval")
        batches = torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, num_workers=args.workers,
                                              collate_fn=image_captions_collate_fn)
        result = evaluate(model, batches, tokenizer_spec(model).build(truncate=True), args.device, amp=False,
                          recall_k_list=[1, 5, 10])
        return {f"{ours_name}_R@{k}": result[f"{their_name}_retrieval_recall@{k}"] for k in (1, 5, 10)
                for ours_name, their_name in (("image_to_text", "text"), ("text_to_image", "image"))}

    return ours, theirs, keys


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny-vit")
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--language", default="de")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from clipmodule.models import create_model
    from clipmodule.transforms import image_transform

    torch.manual_seed(0)
    model = create_model(args.model).eval().to(args.device)
    preprocess = image_transform(model.config.vision.image_size)
    with tempfile.TemporaryDirectory() as folder:
        root = write_xtd10(Path(folder), args.items, args.language)
        r = compare("xtd10", retrieval_pair(model, preprocess, root, args), args.rounds)
    print(f"\n{args.model}, XTD10 ({args.language}), {args.items} images, {args.rounds} rounds, {args.threads} "
          f"threads, batch {args.batch_size}, {args.workers} workers, {args.device}")
    print("| task | clipmodule wall (s) | CLIP_benchmark wall (s) | ratio | clipmodule CPU (s) "
          "| CLIP_benchmark CPU (s) | CPU ratio |\n|---|---|---|---|---|---|---|")
    print(f"| xtd10 ({args.language}) retrieval | {r['ours']:.2f} | {r['clip_benchmark']:.2f} | {r['ratio']:.2f}x | "
          f"{r['ours_cpu']:.2f} | {r['clip_benchmark_cpu']:.2f} | {r['cpu_ratio']:.2f}x |")


if __name__ == "__main__":
    main()
