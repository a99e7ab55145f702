"""The pieces of the loop on their own: the paired metrics and the promotion rule, and the
routing file (changes, events, locking, a bad file)."""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, f1_score

from server.routing import (
    Routing,
    RoutingError,
    read_events,
    read_routing,
    update_routing,
)
from server.shadow.compare import Pairs, average_precision, macro_f1


@pytest.mark.parametrize("seed", range(5))
def test_the_metrics_are_scikit_learns(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = (rng.random(500) < 0.1).astype(int)
    score = np.round(rng.random(500) * 0.5 + y * rng.random(500) * 0.5, 2)  # ties included
    assert average_precision(y, score) == pytest.approx(average_precision_score(y, score))
    classes = rng.integers(0, 4, 300)
    predicted = np.where(rng.random(300) < 0.6, classes, rng.integers(0, 4, 300))
    assert macro_f1(classes, predicted) == pytest.approx(
        f1_score(classes, predicted, average="macro")
    )
    assert average_precision(np.zeros(5), np.ones(5)) is None


def pairs_of(task: str, primary: np.ndarray, shadow: np.ndarray, truth: np.ndarray) -> Pairs:
    pairs = Pairs(task, capacity=10_000)  # type: ignore[arg-type]
    for p, s, t in zip(primary, shadow, truth, strict=True):
        pairs.add(float(p), float(s), float(t))
    return pairs


def test_only_a_shadow_better_by_the_margin_is_promoted() -> None:
    rng = np.random.default_rng(0)
    y = (rng.random(2_000) < 0.2).astype(float)
    good = y * 0.5 + rng.random(2_000) * 0.6
    bad = y * 0.2 + rng.random(2_000)
    better = pairs_of("binary", bad, good, y)
    assert better.decide(1_000, 0.01).promote
    assert not better.decide(3_000, 0.01).promote  # not enough labels yet
    assert not better.decide(0, 0.01).promote  # the rule is off
    assert not better.decide(1_000, 0.9).promote  # not by that much
    worse = pairs_of("binary", good, bad, y)
    for margin in (0.0, -1.0, 0.01):  # a negative margin counts as 0: worse never qualifies
        assert not worse.decide(100, margin).promote
    same = pairs_of("binary", good, good, y)
    assert not same.decide(100, 0.0).promote  # equal is not better
    one_class = pairs_of("binary", good, bad, np.zeros(2_000))
    assert "one class" in one_class.decide(100, 0.0).reason


def test_regression_promotes_on_a_lower_mae() -> None:
    rng = np.random.default_rng(1)
    truth = rng.normal(50, 10, 1_000)
    close = truth + rng.normal(0, 1, 1_000)
    far = truth + rng.normal(0, 3, 1_000)
    decision = pairs_of("regression", far, close, truth).decide(500, 0.1)
    assert decision.promote and "mae" in decision.reason
    assert not pairs_of("regression", close, far, truth).decide(500, 0.0).promote


def test_routing_changes_and_their_events(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    assert read_routing(tmp_path, "m") == Routing()
    update_routing(tmp_path, "m", lambda r: r.pinned(1), action="pin", by="retrain", reason="x")
    update_routing(tmp_path, "m", lambda r: r.with_shadow(2), action="shadow", by="retrain")
    update_routing(tmp_path, "m", lambda r: r.promoted(2, 1), action="promote", by="auto")
    assert read_routing(tmp_path, "m") == Routing(primary=2, shadow=None, previous=[1])
    with pytest.raises(RoutingError):
        update_routing(tmp_path, "m", lambda r: r.promoted(2, 2), action="promote", by="admin")
    update_routing(tmp_path, "m", lambda r: r.rolled_back(), action="rollback", by="admin")
    assert read_routing(tmp_path, "m") == Routing(primary=1)
    with pytest.raises(RoutingError, match="roll back"):
        Routing(primary=1).rolled_back()
    # compare-and-swap: a promotion from a stale view of the primary or the shadow applies nothing
    with pytest.raises(RoutingError, match="answers now"):
        Routing(primary=4, shadow=5).promoted(5, serving=3)
    with pytest.raises(RoutingError, match="no longer the shadow"):
        Routing(primary=4, shadow=6).promoted(5, serving=4, from_shadow=True)
    assert Routing(primary=4, shadow=5).promoted(5, 4, from_shadow=True) == Routing(
        primary=5, previous=[4]
    )
    events = read_events(tmp_path, "m")
    assert [(e.action, e.by, e.primary, e.shadow) for e in events] == [
        ("pin", "retrain", 1, None),
        ("shadow", "retrain", 1, 2),
        ("promote", "auto", 2, None),
        ("rollback", "admin", 1, None),
    ]
    with pytest.raises(RoutingError):
        update_routing(tmp_path, "absent", lambda r: r, action="pin", by="admin")


def test_concurrent_changes_are_not_lost(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    update_routing(tmp_path, "m", lambda r: r.pinned(1), action="pin", by="admin")

    def bump() -> None:
        for _ in range(20):
            update_routing(
                tmp_path,
                "m",
                lambda r: Routing(primary=r.primary, previous=[*r.previous, 0][-100:]),
                action="pin",
                by="admin",
            )

    threads = [threading.Thread(target=bump) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(read_routing(tmp_path, "m").previous) == 80
    assert len((tmp_path / "m" / "routing-events.jsonl").read_text().splitlines()) == 81


async def test_a_bad_routing_file_keeps_the_routing(
    tmp_path: Path, model_repo: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import shutil

    from server.metrics import ServerMetrics
    from server.registry import Registry
    from server.settings import Settings

    repo = tmp_path / "models"
    shutil.copytree(model_repo / "xgb_small", repo / "xgb_small")
    from tests.server.test_reload import publish_as

    publish_as(repo, "logreg" if (repo / "logreg").exists() else "xgb_small", "xgb_small", 2)
    update_routing(repo, "xgb_small", lambda r: r.pinned(1), action="pin", by="admin")
    registry = Registry(Settings(models_dir=repo, monitoring=False), ServerMetrics())
    await registry.reload(in_thread=False)
    try:
        assert registry.get("xgb_small").version == 1
        (repo / "xgb_small" / "routing.json").write_text(json.dumps({"primary": "one"}))
        caplog.set_level(logging.ERROR, logger="tabserve")
        await registry.reload(in_thread=False)
        assert registry.get("xgb_small").version == 1  # kept, and said so
        assert any("event=routing_unreadable" in r.getMessage() for r in caplog.records)
        (repo / "xgb_small" / "routing.json").unlink()
        await registry.reload(in_thread=False)
        assert registry.get("xgb_small").version == 2  # no file: the newest answers
        # a primary that is not served: the newest answers, but never the shadow
        update_routing(
            repo, "xgb_small", lambda r: Routing(primary=7, shadow=2), action="pin", by="admin"
        )
        await registry.reload(in_thread=False)
        assert registry.get("xgb_small").version == 1
        assert any("event=routing_primary_not_served" in r.getMessage() for r in caplog.records)
    finally:
        await registry.close()


def test_the_scorer_keeps_to_its_cpu_share() -> None:
    from server.shadow.scorer import ShadowScorer

    class Sink:
        rows = 0

        def observe(self, rows: np.ndarray, scores: np.ndarray, requests: object) -> None:
            Sink.rows += len(rows)

    def costly(rows: np.ndarray) -> np.ndarray:
        deadline = time.thread_time() + 0.002  # 2 ms of CPU a run
        while time.thread_time() < deadline:
            pass
        return rows[:, :1]

    for share, scored in ((1.0, True), (0.0, False)):
        Sink.rows = 0
        scorer = ShadowScorer(max_queued_rows=10_000, max_cpu_share=share)
        scorer.start()
        rows = np.ones((16, 3), dtype=np.float32)
        for i in range(50):
            scorer.offer(costly, Sink().observe, rows, [(f"r{i}", 0, 16)])
            time.sleep(0.002)
        deadline = time.monotonic() + 10
        while scorer.queued_rows and time.monotonic() < deadline:
            time.sleep(0.01)
        scorer.close()
        stats = scorer.stats
        assert stats.rows_offered == 800
        if scored:
            assert stats.rows_scored == Sink.rows == 800 and stats.rows_skipped == 0
        else:
            assert stats.rows_scored == Sink.rows == 0
            assert stats.rows_skipped == stats.rows_over_budget == 800
