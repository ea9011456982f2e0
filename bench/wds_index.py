"""How long opening a CLIP_benchmark webdataset copy takes (`eval.readers.wds.open_wds`: the tar index, every
sample's `.cls` and `.npy` metadata), on a generated copy of DataComp's fairness layout:

    .venv/bin/python bench/wds_index.py [--samples 20000] [--per-shard 5000] [--rounds 3] [--against OLD.py]

`--against` times another version of the reader too (e.g. `git show <commit>:clipmodule/eval/readers/wds.py >
/tmp/wds_old.py`), alternating, and checks both give the same items and metadata. Best of `--rounds`, wall and CPU.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def write_copy(root: Path, samples: int, per_shard: int) -> Path:
    import webdataset

    (root / "test").mkdir(parents=True)
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(buffer, format="png")
    with webdataset.ShardWriter(str(root / "test" / "%d.tar"), maxcount=per_shard, verbose=0) as sink:
        for index in range(samples):
            sink.write({"__key__": f"s{index:07d}", "png": buffer.getvalue(), "cls": index % 10,
                        "npy": np.array([index % 4, index, index % 3], dtype=np.int64)})
        shards = sink.shard
    (root / "test" / "nshards.txt").write_text(f"{shards}\n")
    (root / "classnames.txt").write_text("".join(f"class {number}\n" for number in range(10)))
    return root


def _load(path: str):
    spec = importlib.util.spec_from_file_location("wds_other", path)
    module = importlib.util.module_from_spec(spec)
    source = Path(path).read_text().replace('@register("wds"', '@register("wds_other"')  # one registry entry each
    exec(compile(source, path, "exec"), module.__dict__)  # noqa: S102 (a file the user names, like any script)
    return module


def best(open_wds, root: Path, rounds: int) -> tuple[float, float, object]:
    runs = []
    for _ in range(rounds):
        start, cpu = time.perf_counter(), time.process_time()
        dataset = open_wds(root, "test")
        runs.append((time.perf_counter() - start, time.process_time() - cpu))
    return min(wall for wall, _ in runs), min(cpu for _, cpu in runs), dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=20000)
    parser.add_argument("--per-shard", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--against", help="another version of clipmodule/eval/readers/wds.py to time as well")
    args = parser.parse_args()
    from clipmodule.eval.readers.wds import open_wds

    readers = {"this tree": open_wds, **({args.against: _load(args.against).open_wds} if args.against else {})}
    with tempfile.TemporaryDirectory() as folder:
        root = write_copy(Path(folder), args.samples, args.per_shard)
        datasets = {}
        for name, reader in [*readers.items(), *readers.items()]:  # twice, alternating
            wall, cpu, datasets[name] = best(reader, root, args.rounds)
            print(f"{name}: {len(datasets[name])} samples, wall {wall:.3f} s, CPU {cpu:.3f} s (best of {args.rounds})")
        first, *others = datasets.values()
        if any(other.items != first.items or other.metadata != first.metadata for other in others):
            raise SystemExit("the readers disagree")


if __name__ == "__main__":
    main()
