"""Prometheus metrics of the services, in one dedicated registry (never the global default).

* ``zkmeter_ingest_events_total{outcome}``: usage events by outcome (``recorded``,
  ``replayed``, ``refused``), updated by the gRPC transport through :func:`observe_ingest`;
* ``zkmeter_ingest_latency_seconds{rpc}``: time to record one event, per RPC;
* ``zkmeter_epoch_state{state}``: epochs per state (``open``, ``closing``, ``closed``) and
  ``zkmeter_epoch_close_progress{epoch}``: leaves done / leaves total of each closing epoch,
  both read from the database at scrape time (:class:`EpochCollector`);
* ``zkmeter_database_up``: 1 when that read succeeded, else 0 (the scrape itself still works).

Labels are closed sets (outcomes, RPC names, states, epoch ids): no user id, model or text.

Under ``zkmeter serve --workers N`` the ingest metrics cover every worker: the parent creates
one private directory per run (:func:`shared_metrics_dir`) and sets
``PROMETHEUS_MULTIPROC_DIR`` before the workers start (so prometheus_client, imported in each
worker, keeps its values in files there); worker 0's operator listener sums them with
prometheus_client's ``MultiProcessCollector``. The directory is removed when the parent exits.
"""

import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from prover.ledger.schema import EPOCH_CLOSED, EPOCH_CLOSING, EPOCH_OPEN

log = logging.getLogger(__name__)

INGEST_OUTCOMES: tuple[str, ...] = ("recorded", "replayed", "refused")
EPOCH_STATES: tuple[str, ...] = (EPOCH_OPEN, EPOCH_CLOSING, EPOCH_CLOSED)
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                   2.5, 5.0, 10.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

REGISTRY = CollectorRegistry(auto_describe=True)

INGEST_EVENTS = Counter(
    "zkmeter_ingest_events", "Usage events by outcome (recorded, replayed, refused).",
    ["outcome"], registry=REGISTRY)
INGEST_LATENCY = Histogram(
    "zkmeter_ingest_latency_seconds", "Time to record one usage event, per RPC.",
    ["rpc"], buckets=LATENCY_BUCKETS, registry=REGISTRY)


# the label children, bound once (``labels()`` takes a lock and builds a key on every call)
_EVENTS_BY_OUTCOME = {outcome: INGEST_EVENTS.labels(outcome=outcome)
                      for outcome in INGEST_OUTCOMES}  # also exports every outcome, at 0
_LATENCY_BY_RPC: dict[str, Histogram] = {}


def observe_ingest(rpc: str, outcome: str, seconds: float, count: int = 1) -> None:
    """Count ``count`` events of ``outcome`` and observe ``seconds`` (per event) for each."""
    events = _EVENTS_BY_OUTCOME.get(outcome)
    if events is None:
        raise ValueError(f"unknown ingest outcome {outcome!r}")
    if count < 1:
        return
    events.inc(count)
    histogram = _LATENCY_BY_RPC.get(rpc)
    if histogram is None:  # RPC names are a closed set: the transport's methods
        histogram = _LATENCY_BY_RPC.setdefault(rpc, INGEST_LATENCY.labels(rpc=rpc))
    seconds = max(seconds, 0.0)
    for _ in range(count):
        histogram.observe(seconds)


# What the epoch collector reads at scrape time: (epochs per state, {closing epoch id:
# (leaves done, leaves total)}).
EpochSnapshot = tuple[Mapping[str, int], Mapping[int, tuple[int, int]]]


class EpochCollector(Collector):
    """Epoch state and close progress, read through ``snapshot`` at each scrape."""

    def __init__(self, snapshot: Callable[[], EpochSnapshot]) -> None:
        self._snapshot = snapshot

    def describe(self) -> list[Metric]:
        return []  # computed at scrape time; nothing to check at registration

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("zkmeter_database_up",
                               "1 if the last scrape could read the database, else 0.")
        try:
            counts, progress = self._snapshot()
        except Exception as exc:  # a scrape must answer even with the database down
            log.warning("metrics: cannot read epochs: %s", type(exc).__name__)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        states = GaugeMetricFamily("zkmeter_epoch_state", "Epochs per state.",
                                   labels=["state"])
        for state in EPOCH_STATES:
            states.add_metric([state], counts.get(state, 0))
        yield states
        close = GaugeMetricFamily("zkmeter_epoch_close_progress",
                                  "Leaves done / leaves total of each closing epoch.",
                                  labels=["epoch"])
        for epoch_id, (done, total) in sorted(progress.items()):
            close.add_metric([str(epoch_id)], done / total if total else 0.0)
        yield close


class _Shared(Collector):
    """Re-exports the process-wide metrics of :data:`REGISTRY` into another registry."""

    def collect(self) -> Iterator[Metric]:
        yield from REGISTRY.collect()


MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


@contextmanager
def shared_metrics_dir() -> Iterator[str]:
    """A fresh private directory for the metrics of worker processes started inside the block.

    Sets ``PROMETHEUS_MULTIPROC_DIR`` to it (replacing any value the environment had: a
    reused directory would carry counts of an earlier run) for the processes started inside
    the block, which must import prometheus_client after they start (spawn); on exit restores
    the environment and removes the directory."""
    previous = {name: os.environ.get(name)
                for name in (MULTIPROC_ENV, MULTIPROC_ENV.lower())}
    path = tempfile.mkdtemp(prefix="zkmeter-metrics-")  # mode 0700
    os.environ.pop(MULTIPROC_ENV.lower(), None)  # prometheus_client's deprecated spelling
    os.environ[MULTIPROC_ENV] = path
    try:
        yield path
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        shutil.rmtree(path, ignore_errors=True)


def _multiprocess_dir() -> str | None:
    """The directory this process's metrics live in, if prometheus_client is in multiprocess
    mode (it decides once, at import, from the environment)."""
    from prometheus_client import values

    if not getattr(values.ValueClass, "_multiprocess", False):
        return None
    return os.environ.get(MULTIPROC_ENV) or os.environ.get(MULTIPROC_ENV.lower())


def app_registry(snapshot: Callable[[], EpochSnapshot]) -> CollectorRegistry:
    """A registry for one HTTP app: the ingest metrics (this process's, or the sum over the
    ``--workers`` processes in multiprocess mode) plus its epoch collector."""
    registry = CollectorRegistry(auto_describe=False)
    shared = _multiprocess_dir()
    if shared is not None:
        MultiProcessCollector(registry, path=shared)
    else:
        registry.register(_Shared())
    registry.register(EpochCollector(snapshot))
    return registry


def render(registry: CollectorRegistry) -> bytes:
    """The Prometheus text exposition of ``registry``."""
    return generate_latest(registry)
