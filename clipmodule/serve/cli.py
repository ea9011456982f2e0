"""`clipmodule serve --index DIR [--index NAME=DIR ...] [--work NAME=DIR ...] [--cards DIR] --port P`: one local
web service — clip-retrieval's back-end API, a search page (text, image, neighbours), a browse view of a curation
work folder's decisions, and the data cards — bound to 127.0.0.1 unless `--host` says otherwise.

Every index is opened and its model loaded (one warm-up query) before the port opens, so a bad index or model is
one line at start, not an error on the first request."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from clipmodule.errors import ClipModuleError
from clipmodule.options import new_parser, parse


def _parser():
    parser = new_parser("clipmodule serve", "A local web service: search, browse curation decisions, data cards.")
    parser.add_argument("--index", action="append", default=[], help="index folder (`curation index`), as DIR or "
                        "NAME=DIR; repeat for several (the first is the default)")
    parser.add_argument("--shards", nargs="*", default=[], help="shard files or folders for thumbnails, beside "
                        "those the indexes record")
    parser.add_argument("--work", action="append", default=[], help="curation work folder to browse, as DIR or "
                        "NAME=DIR; repeat for several")
    parser.add_argument("--cards", default=None, help="folder of data cards (<name>.md and their plots)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind: loopback only unless told otherwise")
    parser.add_argument("--port", type=int, default=1234, help="port to listen on (clip-retrieval's default)")
    parser.add_argument("--model", default=None, help="query model (default: the one each index records)")
    parser.add_argument("--device", default="cpu", help="torch device of the models")
    parser.add_argument("--mlflow_ui", default=None, help="address of an MLflow UI to link from the page")
    parser.add_argument("--max_body_mb", type=float, default=8.0, help="largest request body (a query image)")
    parser.add_argument("--max_results", type=int, default=1000, help="most hits in one answer")
    return parser


def named_folders(values: list[str], flag: str) -> dict[str, Path]:
    """`DIR` or `NAME=DIR` -> {name: folder}; a name given twice is refused."""
    named: dict[str, Path] = {}
    for value in values:
        name, _, folder = value.rpartition("=") if "=" in value else ("", "", value)
        name = name or Path(folder).resolve().name
        if name in named:
            raise ClipModuleError(f"{flag} {value}: the name {name!r} is given twice (use NAME=DIR)")
        named[name] = Path(folder)
    return named


def config_of(args: Any) -> Any:
    from clipmodule.serve.limits import Limits
    from clipmodule.serve.service import ServeConfig

    if not args.index and not args.work and not args.cards:
        raise ClipModuleError("give at least one of --index, --work and --cards")
    if not 0 <= args.port < 65536:
        raise ClipModuleError(f"--port {args.port}: not a port number")
    limits = Limits(max_body_bytes=int(args.max_body_mb * (1 << 20)), max_results=args.max_results)
    return ServeConfig(indexes=named_folders(args.index, "--index"), shards=args.shards,
                       works=named_folders(args.work, "--work"), cards=Path(args.cards) if args.cards else None,
                       model=args.model, device=args.device, mlflow_ui=args.mlflow_ui, limits=limits)


def main(argv: list[str]) -> int:
    import uvicorn

    from clipmodule.serve.app import create_app
    from clipmodule.serve.service import Service

    args = parse(_parser(), argv)
    service = Service.open(config_of(args))
    for served in service.indexes.values():
        served.search("text", "a photo", 1)  # loads the model now: a bad one fails here, in one line
    print(f"clipmodule serve: http://{args.host}:{args.port}/ (Ctrl-C stops it)", flush=True)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"clipmodule serve: bound to {args.host}: other machines can reach it (no authentication)", flush=True)
    try:
        uvicorn.run(create_app(service), host=args.host, port=args.port, log_level="warning")
    finally:
        service.close()
    return 0
