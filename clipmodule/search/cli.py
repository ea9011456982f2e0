"""`clipmodule search "a red car" --index DIR -k 16` (or `--image FILE`): the nearest samples of a `curation
index` folder to a caption or an image, as a rich table, a PNG contact sheet and a JSON list of the hits.

The query is embedded with the model that made the index's embeddings (recorded by `curation embed` with the
sha256 of its weights; `--model` names another path to it), L2-normalised, and searched with the parameters
`curation index` tuned; a score is the cosine of the query and the sample. A model whose weights hash otherwise
than the recorded ones (a checkpoint replaced under the same path) is refused: its queries would land in another
embedding space.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from clipmodule.errors import ClipModuleError
from clipmodule.options import new_parser, parse


def _parser():
    parser = new_parser("clipmodule search", "Nearest samples of a `curation index` to a caption or an image.")
    parser.add_argument("query", nargs="?", default=None, help="text query (or give --image)")
    parser.add_argument("--image", default=None, help="image file to search with instead of a text query")
    parser.add_argument("--index", required=True, help="index folder written by `curation index`")
    parser.add_argument("-k", "--k", type=int, default=16, help="hits to show")
    parser.add_argument("--model", default=None, help="model of the query (default: the one the index records)")
    parser.add_argument("--device", default="cpu", help="torch device of the model")
    parser.add_argument("--shards", nargs="*", default=[], help="shard files or folders for the thumbnails, when "
                        "the index does not record them (`clipmodule predict` output)")
    parser.add_argument("--out", default="search.png", help="contact sheet PNG; the hits go to <out>.json beside it")
    return parser


def _open(folder: str):
    from curation.formats.knn import IndexFilesError, read_index

    try:
        return read_index(folder)
    except IndexFilesError as error:
        raise ClipModuleError(str(error)) from None


def _shard_files(recorded: dict[str, str], extra: list[str]) -> dict[str, str]:
    from clipmodule.data.shards import shard_paths

    files = dict(recorded)
    files.update({Path(path).name: path for path in (shard_paths(extra) if extra else [])})
    return files


def query_vector(args: Any, model: str, weights_sha256: str | None) -> Any:
    """[1, d] embedding of the text or image query with `model`, whose weights must hash to `weights_sha256`
    (the model that embedded the index) when it is given."""
    from clipmodule.embedding import ShardEmbedder, read_image_file
    from curation.formats.embeddings import EmbedderError

    image = read_image_file(args.image) if args.image else None
    embedder = ShardEmbedder()
    try:
        described = embedder.setup(model, device=args.device)
    except EmbedderError as error:
        raise ClipModuleError(str(error)) from None
    if weights_sha256 is not None and described["weights_sha256"] != weights_sha256:
        raise ClipModuleError(f"model {model}: its weights (sha256 {described['weights_sha256'][:12]}) are not those "
                              f"that embedded {args.index} (sha256 {weights_sha256[:12]}); the query would land in "
                              "another space: pass that model with --model")
    return embedder.embed_images([image]) if image is not None else embedder.embed_text([args.query])


def search(args: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The hits, best first (rank, score, shard, key, caption), and the index's info."""
    index = _open(args.index)
    recorded = index.info.get("model") or {}
    model = args.model or recorded.get("path") or recorded.get("name")
    if not model:
        raise ClipModuleError(f"{args.index}: the index does not record its model (not `curation embed` output); "
                              "pass --model")
    recorded_hash = recorded.get("weights_sha256")
    if recorded_hash is None and args.model is None:
        raise ClipModuleError(f"{args.index}: records its model by path only, not its weights' hash (made before "
                              "hashes were recorded): re-run `curation embed` and `curation index`, or pass --model")
    vector = query_vector(args, model, recorded_hash)
    if vector.shape[1] != index.info["dim"]:
        raise ClipModuleError(f"model {model}: {vector.shape[1]}-dimensional embeddings, the index holds "
                              f"{index.info['dim']}-dimensional ones (another model made it)")
    scores, ids = index.search(vector, args.k)
    rows = index.rows.take([int(i) for i in ids[0] if i >= 0]).to_pylist()
    hits = [{"rank": rank + 1, "score": float(score), **row} for rank, (score, row) in enumerate(zip(scores[0], rows))]
    return hits, index.info


def main(argv: list[str]) -> int:
    args = parse(_parser(), argv)
    if (args.query is None) == (args.image is None):
        raise ClipModuleError("give a text query or --image FILE (one of them)")
    if args.k < 1:
        raise ClipModuleError(f"-k must be >= 1, got {args.k}")
    hits, info = search(args)
    from rich.console import Console
    from rich.table import Table

    from clipmodule.search.sheet import hit_images, plot_hits
    from curation.formats.files import write_json

    label = repr(args.query) if args.query is not None else args.image
    table = Table("#", "score", "shard", "key", "caption", title=f"nearest to {label} in {args.index}")
    for hit in hits:
        table.add_row(str(hit["rank"]), f"{hit['score']:.4f}", hit["shard"], hit["key"], hit.get("caption") or "")
    console = Console(width=None if sys.stdout.isatty() else 160)
    console.print(table)
    out = Path(args.out)
    images = hit_images(hits, _shard_files(info.get("shards") or {}, args.shards))
    plot_hits(label, hits, images, out)
    write_json(out.with_suffix(".json"), {"query": args.query, "image": args.image, "index": args.index, "hits": hits})
    console.print(f"contact sheet: {out} ({sum(i is not None for i in images)} of {len(hits)} thumbnails)")
    console.print(f"hits:          {out.with_suffix('.json')}")
    return 0
