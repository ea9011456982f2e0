"""`clipmodule search "a red car" --index DIR -k 16` (or `--image FILE`): the nearest samples of a `curation
index` folder to a caption or an image, as a rich table, a PNG contact sheet and a JSON list of the hits.

The query is embedded with the model that made the index's embeddings (recorded by `curation embed`; `--model`
overrides it, and must be the same model for the scores to mean anything), L2-normalised, and searched with the
parameters `curation index` tuned; a score is the cosine of the query and the sample. The work is
`clipmodule.search.engine.SearchEngine`'s; this module only parses, prints and plots. A model whose weights hash
otherwise than the recorded ones (`curation embed` records their sha256; a checkpoint replaced under the same
path) is refused: its queries would land in another embedding space.
"""

from __future__ import annotations

import sys
from pathlib import Path

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


def main(argv: list[str]) -> int:
    args = parse(_parser(), argv)
    if (args.query is None) == (args.image is None):
        raise ClipModuleError("give a text query or --image FILE (one of them)")
    if args.k < 1:
        raise ClipModuleError(f"-k must be >= 1, got {args.k}")
    from clipmodule.search.engine import SearchEngine

    engine = SearchEngine(args.index, model=args.model, device=args.device, shards=args.shards)
    hits = engine.by_image(args.image, args.k) if args.image else engine.by_text(args.query, args.k)
    from rich.console import Console
    from rich.table import Table

    from clipformats.files import write_json
    from clipmodule.search.sheet import plot_hits

    label = repr(args.query) if args.query is not None else args.image
    table = Table("#", "score", "shard", "key", "caption", title=f"nearest to {label} in {args.index}")
    for hit in hits:
        table.add_row(str(hit["rank"]), f"{hit['score']:.4f}", hit["shard"], hit["key"], hit.get("caption") or "")
    console = Console(width=None if sys.stdout.isatty() else 160)
    console.print(table)
    out = Path(args.out)
    images = engine.thumbnails(hits)
    plot_hits(label, hits, images, out)
    write_json(out.with_suffix(".json"), {"query": args.query, "image": args.image, "index": args.index, "hits": hits})
    console.print(f"contact sheet: {out} ({sum(i is not None for i in images)} of {len(hits)} thumbnails)")
    console.print(f"hits:          {out.with_suffix('.json')}")
    return 0
