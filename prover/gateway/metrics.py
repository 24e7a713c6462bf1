"""The gateway's Prometheus metrics, on their own registry (served only on the metrics bind,
never on the public port). Labels carry no user ids, keys or text."""

from prometheus_client import CollectorRegistry, Counter, Gauge

REGISTRY = CollectorRegistry(auto_describe=True)

REQUESTS = Counter("zkmeter_gateway_requests", "Requests by route and outcome.",
                   ("route", "outcome"), registry=REGISTRY)
MISMATCH = Counter("zkmeter_gateway_usage_mismatch",
                   "Upstream usage that disagrees with zkmeter's count (not trusted).",
                   ("field",), registry=REGISTRY)
REPORTS = Counter("zkmeter_gateway_reports",
                  "Usage reports to zkmeter serve by outcome (delivered, replayed, queued, "
                  "retry_failed, refused).", ("outcome",), registry=REGISTRY)
QUEUE_DEPTH = Gauge("zkmeter_gateway_queue_depth", "Reports waiting in the durable queue.",
                    registry=REGISTRY)
QUEUE_FULL = Counter("zkmeter_gateway_queue_full",
                     "Requests refused because the report queue was full.", registry=REGISTRY)
