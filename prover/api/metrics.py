"""Prometheus metrics of the service, in one registry of their own (served at /metrics).

The gRPC transport reports every ingest through :func:`observe_ingest`; the epoch gauges are
computed from the database when the registry is scraped.
"""

from prometheus_client import CollectorRegistry, Counter, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

INGEST_EVENTS = Counter(
    "zkmeter_ingest_events", "Usage events by outcome (recorded, replayed, refused).",
    ["outcome"], registry=REGISTRY)
INGEST_LATENCY = Histogram(
    "zkmeter_ingest_latency_seconds", "Time to record one usage event, by RPC.", ["rpc"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
    registry=REGISTRY)


def observe_ingest(rpc: str, outcome: str, seconds: float, count: int = 1) -> None:
    """Count ``count`` events of one outcome and record the per-event latency."""
    INGEST_EVENTS.labels(outcome=outcome).inc(count)
    INGEST_LATENCY.labels(rpc=rpc).observe(seconds)
