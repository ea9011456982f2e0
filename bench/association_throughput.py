"""WinoGAViL throughput: `clipmodule eval`'s association task against DataComp's evaluation loop, same model, data
and CPU.

    .venv/bin/python bench/association_throughput.py [--model tiny-vit] [--games 120] [--pool 300] [--rounds 3]
                                                      [--threads 2] [--json FILE]

The data is a WinoGAViL copy in its release layout (`winogavil_dataset.csv` + `winogavil_images/`; synthetic
JPEGs): `--games` games of 5, 6, 10 or 12 candidates drawn from a pool of `--pool` images, as in the real set
where games share images. DataComp's loop (mlfoundations/datacomp eval_utils/wino_eval.py, transcribed: it reads
the set through Hugging Face `datasets`, which is not installed here) takes one game at a time: it decodes and
preprocesses every candidate, encodes them and the cue prompt, picks the top-k by `np.argsort` and scores
`sklearn.metrics.jaccard_score`. Ours (`eval.tasks.association`) encodes each distinct image once in batches and
every cue prompt in batches. Both use the same model object (random weights of `--model`, fp32), its preprocess
and tokenizer, and the same intra-op threads; the table gives medians over rounds (alternating which runs first)
of the whole evaluation, and checks both give the same Jaccard index.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def write_winogavil(root: Path, games: int, pool: int, seed: int = 0) -> Path:
    """A release-layout copy: `pool` 320x240 JPEGs and `games` games over them (JSON lists, as the CSV holds)."""
    import csv

    rng = np.random.default_rng(seed)
    base = root / "winogavil"
    (base / "winogavil_images").mkdir(parents=True)
    names = [f"image{number:04d}" for number in range(pool)]
    for number, name in enumerate(names):
        field = rng.integers(0, 255, (240, 320, 3), dtype=np.uint8) // 4 + np.uint8(number % 190)
        Image.fromarray(field).save(base / "winogavil_images" / f"{name}.jpg", quality=90)
    with (base / "winogavil_dataset.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["cue", "candidates", "associations"])
        for number in range(games):
            size = int(rng.choice([5, 6, 10, 12]))
            candidates = [names[i] for i in rng.choice(pool, size, replace=False)]
            chosen = candidates[: int(rng.integers(2, 5))]
            writer.writerow([f"cue{number}", json.dumps(candidates), json.dumps(chosen)])
    return base


def datacomp_loop(model, preprocess, tokenizer, dataset) -> float:
    """DataComp's per-game evaluation, transcribed (see the module docstring); the mean Jaccard index."""
    from sklearn.metrics import jaccard_score

    from clipmodule.eval.tasks.association import cue_prompt

    paths = [path for path, _ in dataset.items]
    scores = []
    with torch.no_grad():
        for game in dataset.games:
            images = torch.stack([preprocess(Image.open(paths[i]).convert("RGB")) for i in game.candidates])
            truth = np.isin(np.arange(len(game.candidates)),
                            [position for position, i in enumerate(game.candidates) if i in game.associations])
            image_features = model.encode_image(images, normalize=True)
            text_features = model.encode_text(tokenizer([cue_prompt(game.cue)]), normalize=True)
            logits = (text_features @ image_features.T).squeeze(0).numpy()
            predicted = np.isin(np.arange(len(game.candidates)), np.argsort(logits)[-int(truth.sum()):])
            scores.append(jaccard_score(truth, predicted))
    return float(np.mean(scores))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="tiny-vit")
    parser.add_argument("--games", type=int, default=120)
    parser.add_argument("--pool", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from clipmodule.checkpoints.io import preprocess_of
    from clipmodule.eval.options import LoaderOptions, TaskSpec
    from clipmodule.eval.readers import open_dataset
    from clipmodule.eval.suite import run_task
    from clipmodule.eval.tasks.features import model_tokenizer
    from clipmodule.models import create_model

    torch.manual_seed(0)
    model = create_model(args.model).eval()
    preprocess = preprocess_of(model).transform()  # what `clipmodule.load` hands out with the model
    tokenizer = model_tokenizer(model)
    with tempfile.TemporaryDirectory() as folder:
        root = write_winogavil(Path(folder), args.games, args.pool).parent
        spec = TaskSpec("association", dataset="winogavil", root=str(root))
        loader = LoaderOptions(batch_size=64, num_workers=0, device="cpu")
        dataset = open_dataset("winogavil", root).with_transform(preprocess)
        times: dict[str, list[float]] = {"clipmodule": [], "datacomp": []}
        values = {}
        for round_ in range(args.rounds):
            order = ("clipmodule", "datacomp") if round_ % 2 == 0 else ("datacomp", "clipmodule")
            for name in order:
                start = time.perf_counter()
                if name == "clipmodule":
                    values[name] = run_task(model, preprocess, spec, loader, None)["jaccard"]
                else:
                    values[name] = datacomp_loop(model, preprocess, tokenizer, dataset)
                times[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(seconds) for name, seconds in times.items()}
    report = {"games": args.games, "pool": args.pool, "model": args.model, "threads": args.threads,
              "seconds": medians, "games_per_second": {name: args.games / s for name, s in medians.items()},
              "ratio": medians["datacomp"] / medians["clipmodule"], "jaccard": values}
    print(f"{'pipeline':<12} {'seconds':>8} {'games/s':>8}  jaccard")
    for name in ("clipmodule", "datacomp"):
        print(f"{name:<12} {medians[name]:8.2f} {args.games / medians[name]:8.1f}  {values[name]:.4f}")
    print(f"ratio (DataComp's time / ours): {report['ratio']:.1f}x")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
