"""Adaptive bypass: stop paying for a cache that finds nothing.

Traffic that never repeats pays a cached model's lookup and store on every miss and gets no hit
back: ``tabserve bench --suite cache`` measures 4-15% more server CPU per request for
``xgb_large`` at c=64 and 30-55% at c=1 on unique rows. So each model version's cache watches
its own hit ratio: over a window of ``window_rows`` looked-up rows, when fewer than
``min_hit_ratio`` of them were hits, the cache is *bypassed*: batches skip the lookup and the
store, except one batch in ``probe_every``, which still looks up and stores. The probes' rows
form the next, shorter window (``probe_window_rows``), and as soon as one of those windows finds
hits again, every batch uses the cache again. The response memo in front is not affected (its
doorkeeper already keeps non-repeating bodies out).

While bypassed, ``Cache-Control: no-cache`` requests are not stored either (the scores they
would refresh are the model's own, so no answer differs, only an entry's expiry).
"""

from __future__ import annotations


class Bypass:
    """Decides per batch whether a model version's cache is worth asking."""

    def __init__(
        self,
        *,
        window_rows: int = 4096,
        probe_window_rows: int = 256,
        min_hit_ratio: float = 0.01,
        probe_every: int = 16,
    ) -> None:
        self.window_rows = window_rows
        self.probe_window_rows = probe_window_rows
        self.min_hit_ratio = min_hit_ratio
        self.probe_every = probe_every
        self.active = False
        """True while batches skip the cache (but for the probes)."""
        self.rows_bypassed = 0
        self._rows = 0
        self._hits = 0
        self._batches = 0

    def skip(self, rows: int) -> bool:
        """Whether a batch of ``rows`` should skip the cache (counted when it does)."""
        if not self.active:
            return False
        self._batches += 1
        if self._batches >= self.probe_every:
            self._batches = 0
            return False  # a probe: looked up and stored, so repetition shows again
        self.rows_bypassed += rows
        return True

    def record(self, rows: int, hits: int) -> None:
        """A lookup of ``rows`` rows found ``hits``; at the end of a window, decide again."""
        self._rows += rows
        self._hits += hits
        window = self.probe_window_rows if self.active else self.window_rows
        if self._rows >= window:
            self.active = self._hits < self.min_hit_ratio * self._rows
            self._rows = self._hits = self._batches = 0
