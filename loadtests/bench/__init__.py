"""``tabserve bench``: measurements of the running server on loopback, with pinned cores.

Suites: ``serving`` (:mod:`loadtests.bench.serving`: predict against its floors, batching on and
off, ONNX Runtime alone) and ``cache`` (:mod:`loadtests.bench.cache`: the response cache's tiers
on repeated and unique traffic). :mod:`loadtests.bench.cli` parses the options and runs them;
:mod:`loadtests.bench.cache_costs` times the cache's pieces in process.
"""
