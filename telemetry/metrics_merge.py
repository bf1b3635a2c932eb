"""One `/metrics` for several worker processes: their expositions merged in the collector.

Each `sluice serve --workers N` worker keeps its own in-process registry (fast: no lock or
file write per observation) and sends its exposition to the telemetry collector every
second; a scrape of any worker asks the collector for the merge. Counters, histograms and
summaries add up across workers (their `_created` take the earliest), and so do queue
depths; other gauges take the largest value (a breaker open in one worker shows as open). The collector's own writer
counters are added once, by the collector, not mirrored by each worker.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

_ADDITIVE = {"counter", "histogram", "summary"}
_ADDITIVE_GAUGES = {"sluice_telemetry_queue_depth"}     # rows held: the workers' plus the collector's


class _Merged:
    """A registry collector that yields already merged families."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        yield from self._families


def merge_expositions(texts: Iterable[bytes]) -> bytes:
    """The Prometheus text exposition of the merged workers' metrics."""
    kinds: dict[str, tuple[str, str]] = {}                       # family -> (type, help)
    values: dict[str, dict[tuple, float]] = {}                   # family -> sample key -> value
    for text in texts:
        for family in text_string_to_metric_families(text.decode()):
            kinds.setdefault(family.name, (family.type, family.documentation))
            merged = values.setdefault(family.name, {})
            additive = family.type in _ADDITIVE or family.name in _ADDITIVE_GAUGES
            for sample in family.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                old = merged.get(key)
                if old is None:
                    merged[key] = sample.value
                elif sample.name.endswith("_created"):
                    merged[key] = min(old, sample.value)
                elif additive:
                    merged[key] = old + sample.value
                else:
                    merged[key] = max(old, sample.value)
    families = []
    for name, (kind, documentation) in kinds.items():
        metric = Metric(name, documentation, kind)
        for (sample_name, labels), value in values[name].items():
            metric.add_sample(sample_name, dict(labels), value)
        families.append(metric)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Merged(families))
    return generate_latest(registry)


def writer_exposition(stats: dict, capacity: int) -> bytes:
    """The collector's writer counters and queue depths, named as `GatewayMetrics` names them."""
    written = CounterMetricFamily("sluice_telemetry_rows_written", "Rows/spans written to ClickHouse.",
                                  labels=("queue",))
    dropped = CounterMetricFamily("sluice_telemetry_rows_dropped", "Rows/spans dropped, by reason.",
                                  labels=("queue", "reason"))
    failed = CounterMetricFamily("sluice_telemetry_write_errors", "Failed ClickHouse insert attempts.",
                                 labels=("queue",))
    depth = GaugeMetricFamily("sluice_telemetry_queue_depth", "Rows/spans waiting for ClickHouse.",
                              labels=("queue",))
    limit = GaugeMetricFamily("sluice_telemetry_queue_capacity",
                              "Maximum rows/spans held while ClickHouse is down.", labels=("queue",))
    for queue, n in stats["written"].items():
        written.add_metric((queue,), n)
    for (queue, reason), n in stats["dropped"].items():
        dropped.add_metric((queue, reason), n)
    for queue, n in stats["failed"].items():
        failed.add_metric((queue,), n)
    for queue, n in stats["depth"].items():
        depth.add_metric((queue,), n)
        limit.add_metric((queue,), capacity)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Merged([written, dropped, failed, depth, limit]))
    return generate_latest(registry)
