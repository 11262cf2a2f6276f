"""The splade-serve ASGI app (Starlette): TEI's /embed_sparse over one encoder and its MicroBatcher.

Routes: POST /embed_sparse (documents, TEI's request and response), POST /query/embed_sparse (the
same for queries: an inference-free model's query side is its token weight table, a graph model's
the same graph), GET /info, GET /health, GET /metrics. With an API key, every route but /health and
/metrics needs `Authorization: Bearer KEY` (as TEI's --api-key). Every error is TEI's JSON body;
anything unexpected is logged with its traceback on the server and answered as a one-line 500.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .. import __version__
from ..errors import OverloadedError, SpladeError
from .batcher import DOCUMENT, QUERY, MicroBatcher
from .metrics import CONTENT_TYPE, ServeMetrics
from .tei import (
    BACKEND,
    OVERLOADED,
    UNAUTHORIZED,
    UNHEALTHY,
    VALIDATION,
    ApiError,
    EmbedRequest,
    parse_request,
    sparse_rows,
    too_large,
    too_long,
)
from .truncation import TokenCounter

logger = logging.getLogger("splade_rt")

JSON = "application/json"
OFF_LOOP_CHARS = 4096  # tokenizing more text than this for a truncation check runs off the event loop
OFF_LOOP_NONZEROS = 8192  # building a response of more weights than this runs off the event loop


@dataclass(frozen=True)
class ServeSettings:
    """The server's limits and options (the splade-serve flags; TEI's names and defaults)."""

    max_client_batch_size: int = 32  # inputs per request (TEI --max-client-batch-size)
    payload_limit: int = 2_000_000  # request body bytes (TEI --payload-limit)
    auto_truncate: bool = True  # what `truncate` absent or null means (TEI --auto-truncate)
    api_key: str | None = None  # Bearer token every route but /health and /metrics needs (TEI --api-key)


def create_app(encoder: Any, settings: ServeSettings | None = None, **batcher_options: Any) -> Starlette:
    """The app over a loaded encoder; batcher_options go to MicroBatcher (max_batch_tokens, max_wait_ms,
    max_queue, runs). The batcher starts here and is closed, finishing what is queued, at shutdown."""
    settings = settings or ServeSettings()
    metrics = ServeMetrics()
    batcher = MicroBatcher(encoder, on_batch=metrics.on_batch, **batcher_options)
    if settings.max_client_batch_size > batcher.max_queue:
        batcher.close()
        raise ValueError(f"max client batch size {settings.max_client_batch_size} exceeds the queue's "
                         f"{batcher.max_queue} texts (--max-concurrent-requests): such a request could never be "
                         "accepted")
    metrics.track_queue(lambda: batcher.queued)
    server = _Server(encoder, batcher, settings, metrics)

    @asynccontextmanager
    async def lifespan(app: Starlette):
        yield
        await asyncio.to_thread(batcher.close)

    routes = [
        Route("/embed_sparse", server.endpoint("/embed_sparse", server.embed_documents), methods=["POST"]),
        Route("/query/embed_sparse", server.endpoint("/query/embed_sparse", server.embed_queries), methods=["POST"]),
        Route("/info", server.endpoint("/info", server.info), methods=["GET"]),
        Route("/health", server.endpoint("/health", server.health, public=True), methods=["GET"]),
        Route("/metrics", server.endpoint("/metrics", server.metrics_page, public=True), methods=["GET"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.batcher = batcher
    app.state.metrics = metrics
    return app


class _Server:
    def __init__(self, encoder: Any, batcher: MicroBatcher, settings: ServeSettings, metrics: ServeMetrics) -> None:
        self.encoder, self.batcher, self.settings, self.metrics = encoder, batcher, settings, metrics
        self.counter = TokenCounter(encoder)
        self._authorization = f"Bearer {settings.api_key}".encode() if settings.api_key else None

    def endpoint(self, route: str, handler: Callable[[Request], Awaitable[Response]], *,
                 public: bool = False) -> Callable[[Request], Awaitable[Response]]:
        """handler wrapped with the API key check, TEI's error bodies, the never-a-traceback rule and metrics."""

        async def answer(request: Request) -> Response:
            started = time.perf_counter()
            try:
                if not public:
                    self._check_key(request)
                response = await handler(request)
            except ApiError as e:
                response = _error(e)
            except Exception:  # logged here in full; the client gets one line
                logger.exception("splade-serve: %s failed", route)
                response = _error(ApiError(500, BACKEND, "internal error; the server's log has the details"))
            self.metrics.answered(route, response.status_code, time.perf_counter() - started)
            return response

        return answer

    def _check_key(self, request: Request) -> None:
        if self._authorization is None:
            return
        given = request.headers.get("authorization", "").encode()
        if not hmac.compare_digest(given, self._authorization):
            error = ApiError(401, UNAUTHORIZED, "missing or wrong API key: send the header "
                                                "`Authorization: Bearer <key>`")
            raise error

    # -- routes -----------------------------------------------------------------------------------

    async def embed_documents(self, request: Request) -> Response:
        return await self._embed(request, DOCUMENT)

    async def embed_queries(self, request: Request) -> Response:
        return await self._embed(request, QUERY)

    async def info(self, request: Request) -> Response:
        encoder, batcher = self.encoder, self.batcher
        table = encoder.query_table is not None
        body = {  # TEI's /info fields first, then splade-rt's own
            "model_id": str(encoder.manifest.source.get("model", encoder.path.name)),
            "model_dtype": encoder.placement.precision,
            "model_type": {"embedding": {"pooling": "splade"}},
            "max_concurrent_requests": batcher.max_queue,
            "max_input_length": encoder.max_length,
            "max_batch_tokens": batcher.max_batch_tokens,
            "max_batch_requests": None,
            "max_client_batch_size": self.settings.max_client_batch_size,
            "auto_truncate": self.settings.auto_truncate,
            "version": __version__,
            "router": "splade-serve",
            "device": encoder.device,
            "provider": encoder.provider,
            "graph": encoder.placement.file,
            "vocab_size": encoder.dim,
            "payload_limit": self.settings.payload_limit,
            "max_wait_ms": batcher.max_wait_ms,
            "concurrent_runs": batcher.runs,
            "query_encoder": "table" if table else "graph",
            "routes": {"documents": "/embed_sparse", "queries": "/query/embed_sparse"},
        }
        return Response(orjson.dumps(body), media_type=JSON)

    async def health(self, request: Request) -> Response:
        if not self.batcher.healthy:
            raise ApiError(503, UNHEALTHY, "unhealthy")
        return Response(b"", status_code=200)

    async def metrics_page(self, request: Request) -> Response:
        return Response(self.metrics.exposition(), media_type=CONTENT_TYPE)

    # -- /embed_sparse ----------------------------------------------------------------------------

    async def _embed(self, request: Request, side: str) -> Response:
        body = await _read_body(request, self.settings.payload_limit)
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError as e:
            raise ApiError(422, VALIDATION, f"the body is not valid JSON: {e}") from None
        req = parse_request(data, max_client_batch_size=self.settings.max_client_batch_size,
                            auto_truncate=self.settings.auto_truncate)
        texts, tokens = await self._truncation(req, side)
        try:
            future = self.batcher.submit(texts, side, tokens=tokens)
        except OverloadedError:
            raise ApiError(429, OVERLOADED, "Model is overloaded") from None
        except (ValueError, TypeError) as e:
            raise ApiError(422, VALIDATION, f"Input validation error: {e}") from None
        try:
            result = await asyncio.wrap_future(future)
        except (ValueError, TypeError) as e:  # a rule of the encoder's about this text
            raise ApiError(422, VALIDATION, f"Input validation error: {e}") from None
        except SpladeError as e:  # the device failed (out of memory and the like): TEI's backend error
            logger.warning("splade-serve: encoding failed: %s", e)
            raise ApiError(424, BACKEND, f"Backend error: {e}") from None
        if result.nnz > OFF_LOOP_NONZEROS:
            payload = await asyncio.to_thread(_dump_rows, result)
        else:
            payload = _dump_rows(result)
        return Response(payload, media_type=JSON)

    async def _truncation(self, req: EmbedRequest, side: str) -> tuple[list[str], list[int] | None]:
        """The texts to encode and their token counts where known. truncate false: a text over
        max_length is an error (TEI's 422); left: each text's end is kept. Right truncation is the
        encoder's own. An inference-free model's queries are looked up under the query tokenizer's own
        truncation rule (no graph, no max_length to exceed)."""
        if (req.truncate and req.direction == "right") or (side == QUERY and self.encoder.query_table is not None):
            return req.texts, None
        work = self._counts if not req.truncate else self._cut_left
        if sum(len(t) for t in req.texts) > OFF_LOOP_CHARS:
            return await asyncio.to_thread(work, req.texts)
        return work(req.texts)

    def _counts(self, texts: list[str]) -> tuple[list[str], list[int]]:
        counts = self.counter.count(texts)
        for n in counts:
            if n > self.counter.max_length:
                raise too_long(n, self.counter.max_length)
        return texts, counts

    def _cut_left(self, texts: list[str]) -> tuple[list[str], list[int]]:
        try:
            cuts = [self.counter.cut_left(t) for t in texts]
        except ValueError as e:
            raise ApiError(422, VALIDATION, f"Input validation error: {e}") from None
        return [text for text, _ in cuts], [n for _, n in cuts]


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 past `limit` bytes: by Content-Length before reading, and while reading
    (a chunked body has none)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large(int(declared), limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large(size, limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _dump_rows(result: Any) -> bytes:
    return orjson.dumps(sparse_rows(result.indptr, result.indices, result.values))


def _error(error: ApiError) -> Response:
    headers = {"WWW-Authenticate": "Bearer"} if error.status == 401 else None
    return Response(orjson.dumps(error.body()), status_code=error.status, media_type=JSON, headers=headers)
