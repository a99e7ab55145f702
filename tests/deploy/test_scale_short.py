"""Replicas behind a real HAProxy with one Redis, bounded (``make scaletest`` runs it longer).

Every scenario of ``loadtests/scale.py`` on two replicas of the test repository's ``xgb_small``
(its version 2 is the ``logreg`` graph), one second of load around each step.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from loadtests.haproxyproc import find_haproxy_binary
from loadtests.scale import format_results, problems, run

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.redis,
    pytest.mark.skipif(
        find_haproxy_binary() is None,
        reason="haproxy is not installed (Debian: apt-get install haproxy)",
    ),
]


def test_replicas_share_the_cache_roll_out_survive_sigkill_and_scale_out(
    model_repo: Path, redis_binary: str, tmp_path: Path
) -> None:
    results = run(model_repo, tmp_path, concurrency=4, phase_s=1.0)
    print(format_results(results))
    assert problems(results, timing=False) == []  # the 5 s bound is make scaletest's
    cache = results["shared_cache"]
    assert cache["redis_hits_on_other_replica"] >= 1 and cache["same_answer"]
    roll = results["rolling_update"]
    assert roll["failed"] == 0 and roll["scores_not_of_the_named_version"] == 0
    assert roll["answered_by_v1"] > 0 and roll["answered_by_v2"] > 0
    kill = results["sigkill"]
    assert kill["failed"] <= (
        kill["in_flight_on_killed_replica"] + kill["retried_on_survivors_by_balancer"]
    )
    assert results["replica_added"]["first_answer_after_ready_s"] is not None
