"""Prometheus metrics, model-health signals and the A/B significance test.

Why per-app registries: tests start several apps in one process; the global registry would refuse
the second. With several uvicorn workers, ``PROMETHEUS_MULTIPROC_DIR`` is set by :func:`serve` and
``/metrics`` aggregates every worker's counters (prometheus_client multiprocess mode).

Health signals are computed per process over the last ``window`` recommendation requests:
the share served by the popularity fallback, the feedback rate (feedback events per recommendation
list) and score drift: the standardised difference between the mean top-1 score served and the
top-1 score of training users measured at load time (``|mean_served - mean_train| / std_train``).
A signal crossing its threshold logs one structured JSON line on the ``modalrec.serving.alerts``
logger (and counts ``modalrec_alerts_total``).
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from collections import deque
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from modalrec.serving.settings import HealthConfig

alert_log = logging.getLogger("modalrec.serving.alerts")

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class ServingMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "modalrec_requests",
            "HTTP requests by route and status",
            ["route", "method", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "modalrec_request_seconds",
            "Request latency by route",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.feedback = Counter("modalrec_feedback", "Feedback events stored", ["arm", "event"], registry=r)
        self.recommendations = Counter(
            "modalrec_recommendations",
            "Recommendation lists served by arm and source",
            ["arm", "source"],
            registry=r,
        )
        self.index_items = Gauge(
            "modalrec_index_items", "Items in the ANN index", ["arm"], registry=r, multiprocess_mode="max"
        )
        self.index_recall = Gauge(
            "modalrec_index_recall_at_10",
            "ANN recall@10 against exact search, measured at load",
            ["arm"],
            registry=r,
            multiprocess_mode="min",
        )
        self.alerts = Counter("modalrec_alerts", "Model-health alerts raised", ["arm", "signal"], registry=r)
        self.reloads = Counter(
            "modalrec_reloads", "Run directory reloads by outcome", ["outcome"], registry=r
        )

    def render(self) -> bytes:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            reg = CollectorRegistry()
            MultiProcessCollector(reg)
            return generate_latest(reg)
        return generate_latest(self.registry)

    def value(self, name: str, labels: dict[str, str]) -> float:
        """Current value of a counter sample (all workers in multiprocess mode); 0 when absent."""
        reg = self.registry
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            reg = CollectorRegistry()
            MultiProcessCollector(reg)
        total = 0.0
        for fam in reg.collect():
            for s in fam.samples:
                if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                    total += s.value
        return total


class HealthMonitor:
    """Sliding-window health signals for one arm, with threshold alerts."""

    def __init__(
        self, arm: str, cfg: HealthConfig, score_stats: dict[str, float], metrics: ServingMetrics
    ) -> None:
        self.arm = arm
        self.cfg = cfg
        self.stats = score_stats
        self.metrics = metrics
        self.sources: deque[str] = deque(maxlen=cfg.window)
        self.tops: deque[float] = deque(maxlen=cfg.window)
        self.feedback_times: deque[float] = deque(maxlen=cfg.window)
        self.rec_times: deque[float] = deque(maxlen=cfg.window)
        self.last_check = time.monotonic()
        self.active: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def record_recommendation(self, source: str, top_score: float | None) -> None:
        now = time.monotonic()
        with self._lock:
            self.sources.append(source)
            self.rec_times.append(now)
            if top_score is not None and source != "popularity" and math.isfinite(top_score):
                self.tops.append(top_score)
        if now - self.last_check >= self.cfg.check_every_s:
            self.check()

    def record_feedback(self, n: int = 1) -> None:
        now = time.monotonic()
        with self._lock:
            for _ in range(n):
                self.feedback_times.append(now)

    def signals(self) -> dict[str, Any]:
        with self._lock:
            n = len(self.sources)
            fallback = sum(1 for s in self.sources if s == "popularity") / n if n else 0.0
            t0 = self.rec_times[0] if self.rec_times else time.monotonic()
            fb = sum(1 for t in self.feedback_times if t >= t0)
            tops = list(self.tops)
        drift = (
            abs(sum(tops) / len(tops) - self.stats["mean"]) / max(self.stats["std"], 1e-9) if tops else 0.0
        )
        return {
            "requests_in_window": n,
            "fallback_share": round(fallback, 4),
            "feedback_rate": round(fb / n, 4) if n else 0.0,
            "score_drift": round(drift, 4),
            "train_top1_mean": round(self.stats["mean"], 4),
            "served_top1_mean": round(sum(tops) / len(tops), 4) if tops else None,
        }

    def check(self) -> dict[str, dict[str, Any]]:
        """Evaluate thresholds now; log an alert for each signal that newly crosses one."""
        self.last_check = time.monotonic()
        sig = self.signals()
        c = self.cfg
        breaches: dict[str, dict[str, Any]] = {}
        if sig["requests_in_window"] >= c.min_requests:
            if sig["fallback_share"] > c.max_fallback_share:
                breaches["fallback_share"] = {
                    "value": sig["fallback_share"],
                    "threshold": c.max_fallback_share,
                }
            if c.min_feedback_rate > 0 and sig["feedback_rate"] < c.min_feedback_rate:
                breaches["feedback_rate"] = {"value": sig["feedback_rate"], "threshold": c.min_feedback_rate}
            if sig["score_drift"] > c.max_score_drift:
                breaches["score_drift"] = {"value": sig["score_drift"], "threshold": c.max_score_drift}
        for name, b in breaches.items():
            if name not in self.active:
                alert_log.warning(
                    json.dumps({"alert": name, "arm": self.arm, **b, "window": sig["requests_in_window"]})
                )
                self.metrics.alerts.labels(self.arm, name).inc()
        self.active = breaches
        return breaches
