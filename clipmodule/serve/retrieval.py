"""clip-retrieval's back-end API over the search engines, as its `ClipClient` and front-end call it:

    POST /knn-service   {"text" | "image" (base64) | "embedding_input", "indice_name", "num_images", "modality",
                         ...} -> [{"id", "similarity", "caption", "url", "shard", "key", "rank"}, ...]
    GET  /indices-list  -> ["name", ...]
    POST /metadata      {"ids": [...], "indice_name"} -> [{"id", "metadata": {caption, url, shard, key}}, ...]

`id` is the sample's row in the index, `similarity` the engine's cosine, `url` its thumbnail on this service.
The hits are the engine's (those of `clipmodule search`): clip-retrieval's post-filters (deduplicate, safety and
violence models, aesthetic re-weighting, mclip) are accepted and not applied (no such models are at hand), and
`image_url` is refused (a local, read-only service fetches nothing). The body is parsed as JSON whatever its
Content-Type (ClipClient sends none).
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from clipmodule.errors import ClipModuleError
from clipmodule.serve.limits import Limits, RequestError, decode_image, read_body
from clipmodule.serve.service import ServedIndex, Service


def parse_json(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body or b"{}")
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise RequestError(400, f"the request body is not JSON ({error})") from None
    if not isinstance(data, dict):
        raise RequestError(400, "the request body must be a JSON object")
    return data


def count(data: dict[str, Any], name: str, default: int, limits: Limits) -> int:
    value = data.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise RequestError(400, f"{name}: expected a positive integer, got {value!r}")
    if value > limits.max_results:
        raise RequestError(413, f"{name}: {value} is over the limit of {limits.max_results}")
    return value


def knn_query(data: dict[str, Any], limits: Limits) -> tuple[str, Any]:
    """(kind, query) of a knn request: the text, the decoded image or the embedding."""
    text, image, embedding = data.get("text"), data.get("image"), data.get("embedding_input")
    if data.get("image_url"):
        raise RequestError(400, "image_url: this local service fetches nothing; send the image as base64 `image`")
    if text:
        if not isinstance(text, str):
            raise RequestError(400, "text: expected a string")
        if len(text) > limits.max_text_chars:
            raise RequestError(413, f"text: {len(text):,} characters, the limit is {limits.max_text_chars:,}")
        return "text", text
    if image:
        return "image", decode_image(image, limits)
    if embedding is not None:
        if not isinstance(embedding, list) or not all(isinstance(x, (int, float)) for x in embedding):
            raise RequestError(400, "embedding_input: expected a list of numbers")
        return "embedding", embedding
    raise RequestError(400, "give one of text, image and embedding_input")


def thumbnail_url(base: str, index: str, shard: str, key: str) -> str:
    return f"{base}thumb/{quote(index, safe='')}/{quote(shard, safe='')}/{quote(key, safe='')}"


def results(served: ServedIndex, hits: list[dict[str, Any]], base: str) -> list[dict[str, Any]]:
    """clip-retrieval's result rows of the engine's hits."""
    return [{"id": served.row_ids[hit["shard"], hit["key"]], "similarity": hit["score"],
             "caption": hit.get("caption"), "url": thumbnail_url(base, served.name, hit["shard"], hit["key"]),
             "shard": hit["shard"], "key": hit["key"], "rank": hit["rank"]} for hit in hits]


def check_modality(served: ServedIndex, modality: Any) -> None:
    kind = served.engine.index.info.get("kind", "image")
    if modality is not None and modality != kind:
        raise RequestError(400, f"modality {modality!r}: index {served.name!r} holds {kind} embeddings only")


def knn(service: Service, data: dict[str, Any], base: str) -> list[dict[str, Any]]:
    served = service.index(data.get("indice_name"))
    check_modality(served, data.get("modality"))
    k = count(data, "num_images", 40, service.limits)
    kind, query = knn_query(data, service.limits)
    try:
        return results(served, served.search(kind, query, k), base)
    except ClipModuleError as error:
        raise RequestError(400, str(error)) from None


def metadata(service: Service, data: dict[str, Any], base: str) -> list[dict[str, Any]]:
    served = service.index(data.get("indice_name"))
    ids = data.get("ids") or []
    if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        raise RequestError(400, "ids: expected a list of integers")
    if len(ids) > service.limits.max_results:
        raise RequestError(413, f"ids: {len(ids)} of them, the limit is {service.limits.max_results}")
    rows = served.engine.index.rows.num_rows
    answer = []
    for row_id in ids:
        if not 0 <= row_id < rows:
            raise RequestError(404, f"id {row_id}: index {served.name!r} has rows 0 to {rows - 1}")
        row = served.row(row_id)
        answer.append({"id": row_id, "metadata": {
            "caption": row.get("caption"), "shard": row["shard"], "key": row["key"],
            "url": thumbnail_url(base, served.name, row["shard"], row["key"])}})
    return answer


def neighbours(service: Service, index: str, row_id: int, k: int, base: str) -> list[dict[str, Any]]:
    served = service.index(index)
    if not 0 <= row_id < served.engine.index.rows.num_rows:
        raise RequestError(404, f"id {row_id}: not a row of index {served.name!r}")
    if not 1 <= k <= service.limits.max_results:
        raise RequestError(400, f"k: expected 1 to {service.limits.max_results}, got {k}")
    try:
        return results(served, served.neighbours(row_id, k), base)
    except ClipModuleError as error:
        raise RequestError(404, str(error)) from None


def add_routes(app: Any, service: Service) -> None:
    """The API's routes on the FastAPI `app`; the model work runs in the thread pool."""
    @app.get("/indices-list")
    def indices_list() -> list[str]:
        return list(service.indexes)

    @app.post("/knn-service")
    async def knn_service(request: Request) -> Any:
        data = parse_json(await read_body(request, service.limits.max_body_bytes))
        return await run_in_threadpool(knn, service, data, str(request.base_url))

    @app.post("/metadata")
    async def metadata_service(request: Request) -> Any:
        data = parse_json(await read_body(request, service.limits.max_body_bytes))
        return metadata(service, data, str(request.base_url))

    @app.get("/api/neighbours/{index}/{row_id}")
    def neighbours_of(index: str, row_id: int, request: Request, k: int = 40) -> Any:
        return neighbours(service, index, row_id, k, str(request.base_url))
