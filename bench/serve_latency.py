"""`clipmodule serve` against `clipmodule search` on one index: text queries per second and p50/p95 latency of
the service (clip-retrieval's `/knn-service`, sent as `ClipClient` sends it, one client after another), against
the CLI's wall time per query (a process: start, model load, the query, the contact sheet).

    .venv/bin/python bench/serve_latency.py --index demo_out/index [--queries 300] [--cli-runs 3]

The service runs as its own process (`clipmodule serve`, as a user starts it) on 127.0.0.1; the queries are the
index's own captions drawn at random (each different, so nothing is cached). clip-retrieval's back-end is not the
peer here: it does not install beside this stack (its flask_restful and pinned dependencies), and it reads its
own index layout, not `curation index`'s.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import requests


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_service(index: Path, port: int) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-m", "clipmodule", "serve", "--index", f"bench={index}",
                                "--port", str(port)], stdout=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if requests.get(f"http://127.0.0.1:{port}/indices-list", timeout=1).ok:
                return process
        except requests.ConnectionError:
            time.sleep(0.2)
        if process.poll() is not None:
            raise SystemExit(f"clipmodule serve exited with {process.returncode}")
    process.terminate()
    raise SystemExit("clipmodule serve did not answer in 120 s")


def service_latencies(port: int, captions: list[str], k: int) -> list[float]:
    url = f"http://127.0.0.1:{port}/knn-service"
    session = requests.Session()
    times = []
    for caption in captions:
        body = json.dumps({"text": caption, "image": None, "image_url": None, "embedding_input": None,
                           "deduplicate": True, "use_safety_model": True, "use_violence_detector": True,
                           "indice_name": "bench", "use_mclip": False, "aesthetic_score": 9,
                           "aesthetic_weight": 0.5, "modality": "image", "num_images": k, "num_result_ids": k})
        start = time.perf_counter()
        reply = session.post(url, data=body, timeout=60)
        times.append(time.perf_counter() - start)
        assert reply.ok and len(reply.json()) == k, reply.text[:200]
    return times


def cli_seconds(index: Path, captions: list[str], k: int) -> list[float]:
    times = []
    with tempfile.TemporaryDirectory() as folder:
        for caption in captions:
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "clipmodule", "search", caption, "--index", str(index), "-k",
                            str(k), "--out", str(Path(folder) / "sheet.png")], check=True, stdout=subprocess.DEVNULL)
            times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", type=Path, required=True, help="a `curation index` folder")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--cli-runs", type=int, default=3)
    parser.add_argument("-k", type=int, default=40, help="hits per query (ClipClient's default)")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    rows = pq.read_table(args.index / "rows.parquet", columns=["caption"]).column("caption").to_pylist()
    rng = np.random.default_rng(0)
    captions = [rows[int(i)] for i in rng.choice(len(rows), size=args.queries + args.cli_runs, replace=False)]
    port = free_port()
    service = start_service(args.index, port)
    try:
        service_latencies(port, captions[:10], args.k)  # connection and allocator warm-up
        start = time.perf_counter()
        latencies = np.array(service_latencies(port, captions[:args.queries], args.k))
        wall = time.perf_counter() - start
    finally:
        service.terminate()
        service.wait(timeout=30)
    cli = np.array(cli_seconds(args.index, captions[args.queries:], args.k))
    p50, p95 = np.percentile(latencies, [50, 95]) * 1000
    print(f"index {args.index}: {len(rows):,} rows, k={args.k}, {args.queries} text queries, one client")
    print(f"clipmodule serve: {args.queries / wall:.1f} queries/s, p50 {p50:.1f} ms, p95 {p95:.1f} ms")
    print(f"clipmodule search (CLI): {cli.mean():.2f} s per query (mean of {len(cli)}, each a new process)")
    print(f"| {len(rows):,} | {args.queries / wall:.1f} | {p50:.1f} | {p95:.1f} | {cli.mean():.2f} | "
          f"{cli.mean() * 1000 / p95:.0f}x |")


if __name__ == "__main__":
    main()
