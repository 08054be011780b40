"""Prometheus metrics of one box, on a registry of its own (two boxes in one test process never clash)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector


class _Gauges(Collector):
    """Values read at scrape time from live state, so nothing on the hot path updates them."""

    def __init__(self, sample: Callable[[], dict[str, dict[str, float]]]) -> None:
        self._sample = sample

    def collect(self) -> Iterable[GaugeMetricFamily]:
        values = self._sample()
        family = GaugeMetricFamily("molecule_box_workspaces", "Workspaces by status", labels=["status"])
        for status, count in sorted(values.get("workspaces", {}).items()):
            family.add_metric([status], count)
        yield family
        for name, value in sorted(values.get("single", {}).items()):
            yield GaugeMetricFamily(f"molecule_box_{name}", name.replace("_", " "), value=value)


class BoxMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self.heartbeats = Counter("molecule_box_heartbeats", "Heartbeats accepted", registry=self.registry)
        self.registrations = Counter(
            "molecule_box_registrations", "Agent registrations accepted", registry=self.registry
        )
        self.actor_restarts = Counter(
            "molecule_box_actor_restarts", "Workspace actors restarted after raising", registry=self.registry
        )
        self.transitions = Counter(
            "molecule_box_status_transitions", "Workspace status changes", ["to"], registry=self.registry
        )
        self.orphans_removed = Counter("molecule_box_orphans_removed", "Managed workloads the orphan sweep removed "
                                       "(no workspace of this box claims them)", ["backend"], registry=self.registry)
        self.auth_failures = Counter("molecule_box_auth_failures", "Requests refused by their auth tier (401, 403)",
                                     ["tier"], registry=self.registry)
        self.offline_lateness = Histogram(
            "molecule_box_offline_detection_lateness_seconds",
            "How long after its heartbeat deadline a workspace was marked offline",
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5),
            registry=self.registry,
        )
        # SQLite's own time in COMMIT (the fsync, with synchronous=FULL) and in checkpoints: every reply waits
        # for a commit, so a slow disk shows here first (one 185 ms fsync held heartbeats that long in a bench).
        disk_buckets = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
        self.sqlite_commit = Histogram("molecule_box_sqlite_commit_seconds", "Time SQLite spent in one group COMMIT",
                                       buckets=disk_buckets, registry=self.registry)
        self.sqlite_checkpoint = Histogram("molecule_box_sqlite_checkpoint_seconds",
                                           "Time one WAL checkpoint took", buckets=disk_buckets, registry=self.registry)
        self._gauges: _Gauges | None = None

    def bind_sampler(self, sample: Callable[[], dict[str, dict[str, float]]]) -> None:
        if self._gauges is None:
            self._gauges = _Gauges(sample)
            self.registry.register(self._gauges)

    def render(self) -> bytes:
        return generate_latest(self.registry)
