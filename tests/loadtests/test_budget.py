"""Budget parsing and the answer: which models fit a latency budget at a rate."""

from __future__ import annotations

from typing import Any

import pytest

from loadtests.budget import DEFAULT_BUDGET, Budget, answer, parse_budget, recommend


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("p99<=5ms@500rps", Budget(99, 5.0, 500)),
        (" p95 <= 2.5 ms @ 1000 rps ", Budget(95, 2.5, 1000)),
        ("p99.9<=800us@200rps", Budget(99.9, 0.8, 200)),
        ("P50<1s@10req/s", Budget(50, 1000.0, 10)),
    ],
)
def test_parse(text: str, expected: Budget) -> None:
    assert parse_budget(text) == expected


def test_parse_round_trips_and_names_its_percentile() -> None:
    budget = parse_budget("p99<=5ms@500rps")
    assert str(budget) == "p99<=5ms@500rps" and budget.key == "p99"
    assert parse_budget(str(budget)) == budget


@pytest.mark.parametrize(
    "text", ["p99<=5@500rps", "p97<=5ms@500rps", "5ms@500", "p99<=0ms@1rps", ""]
)
def test_parse_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_budget(text)


def test_answer_prefers_measured_paced_cells(results_doc: dict[str, Any]) -> None:
    cells = results_doc["cells"]
    verdicts = {
        v.model: v
        for v in answer(
            cells, parse_budget("p99<=5ms@500rps"), ["fast_ok", "slow_good", "dominated", "nothing"]
        )
    }
    # paced at 500 rps: fast_ok reached 498 (>= 95%) at p99 1.5 ms; slow_good 470 at 4 ms.
    assert verdicts["fast_ok"].fits and verdicts["fast_ok"].how == "measured"
    assert not verdicts["slow_good"].fits and verdicts["slow_good"].how == "measured"
    # no paced cell: inferred from closed loop; dominated never exceeded 1000 rps within 5 ms.
    assert not verdicts["dominated"].fits and verdicts["dominated"].how == "inferred"
    assert verdicts["nothing"].how == "no data"


def test_answer_infers_from_closed_loop(results_doc: dict[str, Any]) -> None:
    cells = [c for c in results_doc["cells"] if c.get("group") != "budget"]
    verdicts = {
        v.model: v
        for v in answer(
            cells, parse_budget("p99<=3ms@350rps"), ["fast_ok", "slow_good", "dominated"]
        )
    }
    assert verdicts["fast_ok"].fits and verdicts["slow_good"].fits  # 2000 and 500 rps within 3 ms
    assert verdicts["dominated"].fits  # 400 rps at p99 3.0 ms: exactly on the limit
    assert all(v.how == "inferred" for v in verdicts.values())
    strict = {v.model: v.fits for v in answer(cells, parse_budget("p99<=1ms@1000rps"), ["fast_ok"])}
    assert strict == {"fast_ok": True}


def test_default_budget_parses() -> None:
    assert parse_budget(DEFAULT_BUDGET) == Budget(99, 5.0, 500)


def test_recommend_picks_the_most_accurate_model_that_fits(results_doc: dict[str, Any]) -> None:
    recs = {r.dataset: r for r in recommend(results_doc["cells"], parse_budget(DEFAULT_BUDGET))}
    assert set(recs) == {"fraud", "cancer"}  # PR-AUC on different data is not compared
    fraud = recs["fraud"]
    # most accurate first: slow_good 0.61 (over budget), fast_ok 0.41 (fits), dominated 0.33
    assert [r.model for r in fraud.ranked] == ["slow_good", "fast_ok", "dominated"]
    assert fraud.choice is not None and fraud.choice.model == "fast_ok"
    assert fraud.choice.accuracy == pytest.approx(0.41)  # under load, the whole hold-out
    assert fraud.choice.verdict.latency_ms == pytest.approx(1.5)
    assert [r.model for r in fraud.more_accurate_over_budget] == ["slow_good"]
    assert recs["cancer"].choice is not None and recs["cancer"].choice.model == "cancer"
    # a looser rate: slow_good sustained 500 req/s at p99 2 ms in closed loop, so it fits
    loose = {r.dataset: r for r in recommend(results_doc["cells"], parse_budget("p99<=5ms@400rps"))}
    assert loose["fraud"].choice is not None and loose["fraud"].choice.model == "slow_good"
    assert loose["fraud"].choice.verdict.how == "inferred"


def test_recommend_names_none_when_nothing_fits(results_doc: dict[str, Any]) -> None:
    (fraud,) = [
        r
        for r in recommend(results_doc["cells"], parse_budget("p99<=0.1ms@5000rps"))
        if r.dataset == "fraud"
    ]
    assert fraud.choice is None and not fraud.fitting
    assert fraud.closest is not None and fraud.closest.model == "fast_ok"
