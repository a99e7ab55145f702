"""Load shapes, kept out of the locustfile so that plain ``-u``/``-t`` runs stay plain.

Add a shape by naming this file after the locustfile::

    locust -f loadtests/locustfile.py,loadtests/shapes.py --headless SteadyOneRow BatchRows \
        --model xgb_large --spike-users 64 --spike-seconds 60 --host http://127.0.0.1:8000

``RampSpike`` pushes past capacity on purpose: a server with backpressure answers the excess with
503 + Retry-After and keeps the latency of what it accepts bounded, instead of collapsing.
"""

from __future__ import annotations

from locust import LoadTestShape

from loadtests.traffic import users_at


class RampSpike(LoadTestShape):
    """Warm, ramp to ``--spike-users``, spike to three times that, then recover."""

    def tick(self) -> tuple[int, float] | None:
        assert self.runner is not None
        options = self.runner.environment.parsed_options
        assert options is not None
        run_time: float = self.get_run_time()  # type: ignore[no-untyped-call]
        users = users_at(run_time, float(options.spike_seconds), int(options.spike_users))
        if users is None:
            return None
        return users, float(max(users, 1) * 4)
