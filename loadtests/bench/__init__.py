"""``tabserve bench``: measurements of the running server on loopback, with pinned cores.

Suites: ``serving`` (:mod:`loadtests.bench.serving`: predict against its floors, batching on and
off, ONNX Runtime alone), ``cache`` (:mod:`loadtests.bench.cache`: the response cache's tiers
on repeated and unique traffic) and ``typed`` (:mod:`loadtests.bench.typed`: server CPU per
one-row request of a model with 3 string and 20 numeric columns against an all-numeric one of the
same width, both built by the bench). :mod:`loadtests.bench.cli` parses the options and runs them;
:mod:`loadtests.bench.cache_costs` times the cache's pieces in process.

Scripts run with ``python -m`` that print numbers (not tests, not part of ``tabserve bench``):
``app_inprocess`` (CPU per request of the whole app through ASGI), ``ort_call`` (one ONNX
Runtime call at batch 1), ``monitor_batcher`` (predict through the Batcher with and without a
monitor), ``monitor_observe`` (the monitor's cost per row), ``monitor_serve`` (throughput with
monitoring on and off on a real server) and ``monitor_snapshots`` (the monitoring JSON after
unshifted and shifted traffic).
"""
