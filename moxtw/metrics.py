"""Prometheus metrics: the process-wide registry, the /metrics resource, store metrics.

moxtw keeps its metrics in its own :data:`REGISTRY` (not prometheus_client's default
registry), with the process and platform collectors registered. Subsystems define their
metrics here or in their own module against :data:`REGISTRY`; the metrics listener serves
them with :class:`MetricsResource` in the Prometheus text exposition format (version 0.0.4).
"""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from twisted.web.resource import Resource
from twisted.web.server import Site

__all__ = [
    "REGISTRY",
    "MetricsResource",
    "IndexResource",
    "make_metrics_site",
    "STORE_DELIVERIES",
    "STORE_DELIVERY_DURATION",
    "STORE_COMMIT_BATCH_SIZE",
    "STORE_ACCOUNTS_OPEN",
    "STORE_FSYNC_DURATION",
    "QUEUE_DELIVERIES",
    "QUEUE_ATTEMPT_DURATION",
    "QUEUE_SIZE",
    "QUEUE_OLDEST_AGE",
]

REGISTRY = CollectorRegistry()
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)

# Buckets for operations that usually take milliseconds but may take seconds under load.
_DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

# Store metrics.
STORE_DELIVERIES = Counter(
    "store_deliveries_total",
    "Messages delivered into accounts, by result (ok, error).",
    ["result"],
    registry=REGISTRY,
)
STORE_DELIVERY_DURATION = Histogram(
    "store_delivery_duration_seconds",
    "Time to deliver a message into an account: file written and index committed.",
    buckets=_DURATION_BUCKETS,
    registry=REGISTRY,
)
STORE_COMMIT_BATCH_SIZE = Histogram(
    "store_commit_batch_size",
    "Operations per group commit of an account index.",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
    registry=REGISTRY,
)
WEB_REQUESTS = Counter(
    "web_requests_total",
    "Requests to the web interfaces, by app (account, admin) and HTTP status.",
    ["app", "code"],
    registry=REGISTRY,
)
JUNK_DECISIONS = Counter(
    "junk_decisions_total",
    "Junk decisions for incoming messages per account, by reason (reputation method, "
    "junk-content, spf-policy, dnsbl, ...) and result (accept, reject).",
    ["reason", "result"],
    registry=REGISTRY,
)
JUNK_ANALYSIS_SECONDS = Histogram(
    "junk_analysis_seconds",
    "Time of the junk analysis of an incoming message for one account.",
    buckets=_DURATION_BUCKETS,
    registry=REGISTRY,
)
TLS_CERT_EXPIRY = Gauge(
    "tls_cert_expiry_seconds",
    "Unix time at which the certificate served for a name on a listener expires.",
    ["listener", "name"],
    registry=REGISTRY,
)
ACME_ORDERS = Counter(
    "acme_certificate_orders_total",
    "Certificate orders at an ACME provider, by result (ok, error).",
    ["provider", "result"],
    registry=REGISTRY,
)
STORE_ACCOUNTS_OPEN = Gauge(
    "store_accounts_open",
    "Accounts currently open.",
    registry=REGISTRY,
)
STORE_FSYNC_DURATION = Histogram(
    "store_fsync_duration_seconds",
    "Time spent in one fsync of a message file, directory or database.",
    buckets=(0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5),
    registry=REGISTRY,
)

# Queue metrics.
QUEUE_DELIVERIES = Counter(
    "queue_deliveries_total",
    "Outgoing delivery results per recipient, by transport and result (ok, temporary, "
    "permanent).",
    ["transport", "result"],
    registry=REGISTRY,
)
QUEUE_ATTEMPT_DURATION = Histogram(
    "queue_attempt_duration_seconds",
    "Duration of one outgoing delivery attempt (all recipients of a message in a domain).",
    ["transport"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
    registry=REGISTRY,
)
QUEUE_SIZE = Gauge(
    "queue_size",
    "Recipients in the outgoing queue (including held ones).",
    registry=REGISTRY,
)
QUEUE_OLDEST_AGE = Gauge(
    "queue_oldest_age_seconds",
    "Age of the oldest message in the outgoing queue; 0 when empty.",
    registry=REGISTRY,
)

# Pre-create the labelled series so they show as 0 before the first delivery.
for _result in ("ok", "error"):
    STORE_DELIVERIES.labels(result=_result)
del _result


# generate_latest writes the classic text format, version 0.0.4; prometheus_client's
# CONTENT_TYPE_LATEST names 1.0.0, which also permits UTF-8 names we do not use.
_CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4


class MetricsResource(Resource):
    """GET: all metrics of a registry in the Prometheus text exposition format."""

    isLeaf = True

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        super().__init__()
        self._registry = registry

    def render_GET(self, request):
        body = generate_latest(self._registry)
        request.setHeader(b"Content-Type", _CONTENT_TYPE.encode("ascii"))
        request.setHeader(b"Cache-Control", b"no-store")
        return body

    def render_HEAD(self, request):
        request.setHeader(b"Content-Type", _CONTENT_TYPE.encode("ascii"))
        return b""


class IndexResource(Resource):
    """The root of the metrics listener: a short text pointing at /metrics."""

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        super().__init__()
        self.putChild(b"metrics", MetricsResource(registry))

    def getChild(self, path, request):
        if path == b"":
            return self
        return super().getChild(path, request)

    def render_GET(self, request):
        request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        return b"moxtw metrics\n\n/metrics  Prometheus metrics\n"


def make_metrics_site(registry: CollectorRegistry = REGISTRY) -> Site:
    """A twisted.web Site serving an index at / and the metrics at /metrics."""
    site = Site(IndexResource(registry))
    site.displayTracebacks = False
    return site
