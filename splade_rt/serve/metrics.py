"""The server's Prometheus metrics, in a registry of its own (one per app, so tests can build several).

Requests by route and status, request latency, and from the micro-batcher's reports: texts per
gathering, their tokens, each text's time in the queue and each gathering's encode time.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from .batcher import BatchReport

# seconds: 50 us to ~30 s, x1.5 apart (TEI's duration buckets start at 15 us and grow x1.5 too)
DURATION_BUCKETS = tuple(round(5e-5 * 1.5 ** i, 7) for i in range(34))
SIZE_BUCKETS = tuple(float(2 ** i) for i in range(13))  # texts per gathering: 1 .. 4096
TOKEN_BUCKETS = tuple(float(2 ** i) for i in range(4, 21))  # tokens per gathering: 16 .. 1M
CONTENT_TYPE = CONTENT_TYPE_LATEST


class ServeMetrics:
    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry()
        prefix = "splade_serve"
        self.requests = Counter(f"{prefix}_requests", "HTTP requests answered, by route and status code",
                                ["route", "status"], registry=registry)
        self.request_seconds = Histogram(f"{prefix}_request_duration_seconds", "time to answer a request",
                                         ["route"], buckets=DURATION_BUCKETS, registry=registry)
        self.texts = Counter(f"{prefix}_texts", "texts encoded, by side", ["side"], registry=registry)
        self.batch_size = Histogram(f"{prefix}_batch_size", "texts per gathered encode (shared graph runs)",
                                    buckets=SIZE_BUCKETS, registry=registry)
        self.batch_tokens = Histogram(f"{prefix}_batch_tokens", "tokens per gathered encode (the budget's count)",
                                      buckets=TOKEN_BUCKETS, registry=registry)
        self.queue_seconds = Histogram(f"{prefix}_queue_duration_seconds", "a text's wait before its encode started",
                                       buckets=DURATION_BUCKETS, registry=registry)
        self.inference_seconds = Histogram(f"{prefix}_inference_duration_seconds", "one gathered encode's time",
                                           buckets=DURATION_BUCKETS, registry=registry)
        self.failures = Counter(f"{prefix}_text_failures", "texts whose encode raised", registry=registry)
        self.queue_texts = Gauge(f"{prefix}_queue_texts", "texts accepted and not yet answered", registry=registry)

    def track_queue(self, queued: Callable[[], float]) -> None:
        """Read the queue gauge from the batcher at each scrape."""
        self.queue_texts.set_function(queued)

    def on_batch(self, report: BatchReport) -> None:
        """The micro-batcher's hook (called on a dispatcher thread; prometheus_client is thread-safe)."""
        self.texts.labels(report.side).inc(report.texts)
        self.batch_size.observe(report.texts)
        self.batch_tokens.observe(report.tokens)
        self.inference_seconds.observe(report.run_seconds)
        for seconds in report.queue_seconds:
            self.queue_seconds.observe(seconds)
        if report.failed:
            self.failures.inc(report.failed)

    def answered(self, route: str, status: int, seconds: float) -> None:
        self.requests.labels(route, str(status)).inc()
        self.request_seconds.labels(route).observe(seconds)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
