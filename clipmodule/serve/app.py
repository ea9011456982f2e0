"""The FastAPI application of `clipmodule serve`: clip-retrieval's API (`retrieval`), the page and its static
files, thumbnails, the browse API and the cards. Everything it reads is named by the `Service` it is given."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from clipmodule.serve.limits import RequestError
from clipmodule.serve.service import Service

STATIC = Path(__file__).with_name("static")
BROWSE_PAGE = 50
SECURITY_HEADERS = {"Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; "
                                               "img-src 'self' data:; frame-ancestors 'none'",
                    "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}
"""Only the service's own scripts run on its pages (a caption or a card cannot bring one)."""


def create_app(service: Service) -> Any:
    from clipmodule.serve import retrieval

    app = FastAPI(title="clipmodule serve", docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(RequestError)
    def refused(request: Request, error: RequestError) -> Any:
        return JSONResponse({"error": error.message}, status_code=error.status)

    @app.middleware("http")
    async def headers(request: Request, call_next: Any) -> Any:
        reply = await call_next(request)
        reply.headers.update(SECURITY_HEADERS)
        return reply

    retrieval.add_routes(app, service)
    _add_data_routes(app, service)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/")
    def page() -> Any:
        return FileResponse(STATIC / "index.html")

    @app.get("/api/config")
    def config() -> dict[str, Any]:
        from clipmodule.serve.cards import card_names

        return {"indices": list(service.indexes), "datasets": list(service.config.works),
                "cards": card_names(service.config.cards), "mlflow_ui": service.config.mlflow_ui,
                "limits": vars(service.limits)}

    return app


def _jpeg(data: bytes | None, what: str) -> Any:
    if data is None:
        raise RequestError(404, f"{what}: no image at hand")
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})


def _add_data_routes(app: Any, service: Service) -> None:
    from clipmodule.serve.cards import CARD_FILES, card_file, render_card

    @app.get("/thumb/{index}/{shard}/{key}")
    def thumbnail(index: str, shard: str, key: str) -> Any:
        return _jpeg(service.index(index).images.thumbnail(shard, key), f"{shard}:{key}")

    @app.get("/api/browse/{dataset}")
    def browse(dataset: str, decision: str = "", q: str = "", offset: int = 0, limit: int = BROWSE_PAGE) -> Any:
        if len(q) > service.limits.max_text_chars or len(decision) > service.limits.max_text_chars:
            raise RequestError(413, "browse: filter text over the limit")
        if offset < 0 or not 1 <= limit <= service.limits.max_results:
            raise RequestError(400, f"browse: offset >= 0 and limit 1 to {service.limits.max_results}")
        return service.dataset(dataset).page(decision, q, offset, limit)

    @app.get("/browse-image/{dataset}/{shard}/{key}")
    def browse_image(dataset: str, shard: str, key: str) -> Any:
        return _jpeg(service.dataset(dataset).images.thumbnail(shard, key), f"{shard}:{key}")

    @app.get("/cards/{relative:path}")
    def cards(relative: str) -> Any:
        root = service.config.cards
        if root is None:
            raise RequestError(404, "this service was given no cards folder")
        if Path(relative).suffix.lower() not in CARD_FILES:
            return HTMLResponse(render_card(root, relative, service.config.mlflow_ui))
        path, media = card_file(root, relative)
        return FileResponse(path, media_type=media)
