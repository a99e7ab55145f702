"""Load shapes, kept out of the locustfile so that plain ``-u``/``-t`` runs stay plain.

Add a shape by naming this file after the locustfile::

    locust -f loadtests/locustfile.py,loadtests/shapes.py --headless SteadyOneRow BatchRows \
        --model xgb_large --spike-users 64 --spike-seconds 60 --host http://127.0.0.1:8000

``RampSpike`` pushes past capacity on purpose: a server with backpressure answers the excess with
503 + Retry-After and keeps the latency of what it accepts bounded, instead of collapsing.
"""

from __future__ import annotations

from locust import LoadTestShape

# (end of stage as a fraction of the total duration, users at its end as a multiple of peak,
#  ramp linearly inside the stage?)
STAGES: tuple[tuple[float, float, bool], ...] = (
    (0.15, 0.125, False),  # warm: a light steady load
    (0.50, 1.0, True),  # ramp up to the peak
    (0.75, 3.0, False),  # spike: three times the peak, all at once
    (1.00, 0.25, False),  # recover: does latency come back down?
)


def users_at(t: float, duration: float, peak: int) -> int | None:
    """Users the shape asks for ``t`` seconds in; None once the shape is over."""
    if t >= duration:
        return None
    previous_end, previous_users = 0.0, STAGES[0][1]
    for end_fraction, multiple, ramp in STAGES:
        end = end_fraction * duration
        if t < end:
            if ramp:
                frac = (t - previous_end) / max(end - previous_end, 1e-9)
                multiple = previous_users + (multiple - previous_users) * frac
            return max(1, round(multiple * peak))
        previous_end, previous_users = end, multiple
    return None


class RampSpike(LoadTestShape):
    """Warm, ramp to ``--spike-users``, spike to three times that, then recover."""

    def tick(self) -> tuple[int, float] | None:
        assert self.runner is not None
        options = self.runner.environment.parsed_options
        users = users_at(
            self.get_run_time(), float(options.spike_seconds), int(options.spike_users)
        )
        if users is None:
            return None
        return users, float(max(users, 1) * 4)
