"""Model-health signals: score drift and feedback rate cross their thresholds and log one JSON alert."""

from __future__ import annotations

import json
import logging

import pytest

from modalrec.serving.metrics import HealthMonitor, ServingMetrics
from modalrec.serving.settings import HealthConfig


def alerts(caplog: pytest.LogCaptureFixture) -> list[dict]:
    return [json.loads(r.getMessage()) for r in caplog.records if r.name == "modalrec.serving.alerts"]


def test_drift_and_feedback_rate_alerts(caplog: pytest.LogCaptureFixture) -> None:
    cfg = HealthConfig(
        window=100, min_requests=20, max_score_drift=2.0, min_feedback_rate=0.05, check_every_s=1e9
    )
    metrics = ServingMetrics()
    mon = HealthMonitor("a", cfg, {"mean": 1.0, "std": 0.1}, metrics)
    with caplog.at_level(logging.WARNING, "modalrec.serving.alerts"):
        for _ in range(30):  # served scores like training: no drift; 3 feedback events per 30 lists
            mon.record_recommendation("model", 1.02)
        mon.record_feedback(3)
        assert mon.check() == {}
        for _ in range(100):  # scores collapse, nobody clicks any more
            mon.record_recommendation("model", 0.5)
        breaches = mon.check()
        assert set(breaches) == {"score_drift", "feedback_rate"}
        assert breaches["score_drift"]["value"] == pytest.approx(5.0, abs=1e-6)
        mon.check()  # still breached: no second alert line
    got = alerts(caplog)
    assert sorted(a["alert"] for a in got) == ["feedback_rate", "score_drift"]
    assert all(a["arm"] == "a" and a["window"] == 100 for a in got)
    assert metrics.value("modalrec_alerts_total", {"signal": "score_drift"}) == 1.0
    # popularity fallbacks carry no model score: they count for the fallback share, not for drift
    mon2 = HealthMonitor("b", cfg, {"mean": 1.0, "std": 0.1}, metrics)
    for _ in range(30):
        mon2.record_recommendation("popularity", 123.0)
    sig = mon2.signals()
    assert sig["fallback_share"] == 1.0 and sig["score_drift"] == 0.0
