"""The web face of `nhl serve`: the page `/`, the JSON API and `/metrics` (FastAPI).

Routes: `GET /` (page), `GET /health`, `GET /items` (query item ids for the page's picker),
`GET /search?item=&bits=&k=`, `POST /search` (multipart: `file`, `bits`, `k`),
`GET /thumb/{item_id}` (PNG), `POST /reload`, `GET /metrics` (Prometheus text). Every error is
a 4xx with a one-line JSON body `{"error": "<field>: <what was expected>"}`; each request reads
the engine's snapshot once, so it is answered by exactly one model version.
"""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, File, Form, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from nhl.service.engine import Engine, RequestError, Snapshot
from nhl.service.uploads import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS, decode_upload

PAGE = Path(__file__).with_name("page.html")
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)


class Metrics:
    """Request counts and latency histograms in their own registry (one per app, so tests can
    build several apps in one process)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter(
            "nhl_serve_requests",
            "HTTP requests by route and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "nhl_serve_request_seconds",
            "Request latency by route",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.search = Histogram(
            "nhl_serve_search_seconds",
            "Index search time by code length",
            ["bits"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.reloads = Counter("nhl_serve_reloads", "Model swaps after the alias moved", registry=self.registry)

    def text(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": " ".join(str(message).split())}, status_code=status)


def _validation_message(err: RequestValidationError) -> str:
    first = err.errors()[0]
    loc = [str(p) for p in first.get("loc", ()) if p not in ("query", "body", "path")]
    field = ".".join(loc) or "request"
    msg = "field required" if first.get("type") == "missing" else first.get("msg", "invalid")
    return f"{field}: {msg}"


def create_app(engine: Engine, max_pixels: int = DEFAULT_MAX_PIXELS, max_bytes: int = DEFAULT_MAX_BYTES) -> FastAPI:
    """The FastAPI app serving `engine`."""
    app = FastAPI(title="nhl serve", docs_url=None, redoc_url=None, openapi_url=None)
    metrics = Metrics()
    app.state.engine, app.state.metrics = engine, metrics

    @app.exception_handler(RequestError)
    async def _request_error(request: Request, err: RequestError) -> JSONResponse:
        return _error(err.status, str(err))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, err: RequestValidationError) -> JSONResponse:
        return _error(422, _validation_message(err))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, err: StarletteHTTPException) -> JSONResponse:
        return _error(err.status_code, f"{request.url.path}: {err.detail}")

    @app.middleware("http")
    async def _count(request: Request, call_next):
        start = time.perf_counter()
        response = await call_next(request)
        route = getattr(request.scope.get("route"), "path", "unmatched")
        metrics.requests.labels(request.method, route, str(response.status_code)).inc()
        metrics.latency.labels(route).observe(time.perf_counter() - start)
        return response

    def answer(snap: Snapshot, code, labels, bits: int | None, k: int, query: dict[str, Any]) -> dict[str, Any]:
        bits = snap.lengths[-1] if bits is None else bits
        found = snap.search(code, labels, bits, k)
        metrics.search.labels(str(bits)).observe(found["search_ms"] / 1000)
        return {"model": snap.describe(), "query": query, **found}

    @app.get("/", response_class=HTMLResponse)
    def page() -> str:
        return PAGE.read_text()

    @app.get("/health")
    def health() -> dict[str, Any]:
        snap = engine.snapshot
        return {
            "status": "ok",
            **snap.describe(),
            "spec": engine.source.spec,
            "reloads": engine.reloads,
            "last_reload_error": engine.last_error,
        }

    @app.get("/items")
    def items(limit: Annotated[int, Query(ge=1, le=100_000)] = 200) -> dict[str, Any]:
        snap = engine.snapshot
        split = snap.queries if snap.queries is not None else snap.database
        return {
            "split": "query" if snap.queries is not None else "database",
            "ids": [int(i) for i in split.codes.ids[:limit]],
            "uploads": snap.image_shape is not None,
        }

    @app.get("/search")
    def search_item(
        item: Annotated[int, Query()], bits: Annotated[int | None, Query()] = None, k: Annotated[int, Query()] = 10
    ) -> dict[str, Any]:
        snap = engine.snapshot
        snap.check(snap.lengths[-1] if bits is None else bits, k)
        code, labels, split = snap.item(item)
        query = {"item": item, "split": split}
        if labels is not None:
            query["labels"] = [int(i) for i in labels.nonzero()[0]]
        return answer(snap, code, labels, bits, k, query)

    @app.post("/search")
    def search_upload(
        file: Annotated[UploadFile, File()], bits: Annotated[int | None, Form()] = None, k: Annotated[int, Form()] = 10
    ) -> dict[str, Any]:
        snap = engine.snapshot
        snap.check(snap.lengths[-1] if bits is None else bits, k)
        data = file.file.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise RequestError(413, f"file: upload over {max_bytes:,} bytes")
        image = decode_upload(data, snap.image_shape, max_pixels)
        return answer(snap, snap.encode(image), None, bits, k, {"upload": file.filename or ""})

    @app.get("/thumb/{item_id}")
    def thumb(item_id: int) -> Response:
        from PIL import Image

        snap = engine.snapshot
        for split in (snap.database, snap.queries):
            if split is None or split.images is None:
                continue
            row = split.table.row(item_id)
            if row is not None:
                buf = io.BytesIO()
                Image.fromarray(split.image(row)).save(buf, format="PNG")
                return Response(buf.getvalue(), media_type="image/png", headers={"Cache-Control": "max-age=3600"})
        raise RequestError(404, f"item_id: no image for item {item_id}")

    @app.post("/reload")
    def reload() -> dict[str, Any]:
        before = engine.snapshot.version
        try:
            engine.reload()
        except (ValueError, OSError) as err:
            raise RequestError(409, f"reload: {err}; still serving {before}") from None
        if engine.snapshot.version != before:
            metrics.reloads.inc()
        return {"changed": engine.snapshot.version != before, **engine.snapshot.describe()}

    @app.get("/metrics")
    def prometheus() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(metrics.text(), media_type=CONTENT_TYPE_LATEST)

    return app
